package engine

import (
	"context"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/logkey"
)

// sweep re-queues persisted operations that are not in flight (after a
// failed completion or a full queue) and prunes old finished operations.
func (e *Engine) sweep(ctx context.Context) {
	t := time.NewTicker(e.o.SweepInterval)
	defer t.Stop()
	lastPrune := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		listed := time.Now()
		pending, err := e.pending(ctx)
		if err != nil {
			e.log.WarnContext(ctx, "sweep: list unfinished operations", logkey.Error, err)
			continue
		}
		e.untrackFinished(listed, pending)
		var due []dps.Operation
		for _, op := range pending {
			if e.o.Now().Sub(op.Created) > time.Second && !e.lanes.has(op.ID) && !e.backingOff(op.ID) {
				e.track(op, false)
				due = append(due, op)
			}
		}
		e.resumeAll(ctx, due)
		if time.Since(lastPrune) > time.Minute {
			lastPrune = time.Now()
			if n, err := e.o.Store.DeleteOperationsBefore(ctx, e.o.Now().Add(-e.o.OperationRetention)); err != nil {
				e.log.WarnContext(ctx, "sweep: prune operations", logkey.Error, err)
			} else if n > 0 {
				e.log.DebugContext(ctx, "pruned finished operations", "count", n)
				if n >= int64(e.o.PruneBatch) {
					lastPrune = time.Time{} // a full batch: more wait, prune again at the next tick
				}
			}
		}
	}
}
