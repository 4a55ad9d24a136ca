package iothub_test

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/iothub"
)

// TestC2DExpirySweep: RunC2DExpiry dead-letters expired messages of every
// queue at each interval — more than one batch at a time — though no
// device asks for them, and the senders that asked (iothub-ack negative
// or full) get Expired feedback with the device's generation; the hub
// hands the feedback out in locked batches of at most MaxFeedbackBatch.
func TestC2DExpirySweep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := dpstest.NewSQLite(t)
		s := iothub.New(iothub.Options{Store: st, Events: st, Hubs: []string{hub}})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		now := time.Now()
		n := iothub.C2DExpiryBatch + iothub.MaxFeedbackBatch/2 // more than one batch of the sweep
		for i := range n {
			ack := "negative"
			if i%2 == 1 {
				ack = "positive" // asks for no feedback of an expiry
			}
			dev := fmt.Sprint("dev-", i%60)
			m := dps.CloudMessage{Hub: hub, DeviceID: dev, GenerationID: "gen-" + dev, MessageID: fmt.Sprint("m", i), Ack: ack,
				Enqueued: now, Expiry: now.Add(5 * time.Second)}
			if _, err := st.EnqueueCloudMessage(ctx, m, n); err != nil {
				t.Fatal(err)
			}
		}
		done := make(chan struct{})
		go func() { defer close(done); s.RunC2DExpiry(ctx, 10*time.Second) }()
		time.Sleep(9 * time.Second) // expired, not yet swept
		synctest.Wait()
		if _, batch, err := s.ReceiveFeedback(ctx, hub); err != nil || len(batch) != 0 {
			t.Fatalf("feedback before the first sweep: %d, %v", len(batch), err)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		var got []dps.CloudFeedback
		for {
			lock, batch, err := s.ReceiveFeedback(ctx, hub)
			if err != nil {
				t.Fatal(err)
			}
			if len(batch) == 0 {
				break
			}
			if len(batch) > iothub.MaxFeedbackBatch || lock == "" {
				t.Fatalf("a batch of %d under lock %q", len(batch), lock)
			}
			got = append(got, batch...)
			if err := s.CompleteFeedback(ctx, hub, `"`+lock+`"`); err != nil {
				t.Fatal(err)
			}
		}
		if len(got) != (n+1)/2 {
			t.Fatalf("%d feedback records, want %d (the negative ones)", len(got), (n+1)/2)
		}
		for _, f := range got {
			if f.Status != dps.FeedbackExpired || f.GenerationID != "gen-"+f.DeviceID || !f.Enqueued.Equal(now.Add(10*time.Second)) {
				t.Fatalf("record %+v", f)
			}
		}
		for i := range 60 {
			if d, err := st.CloudQueueDepth(ctx, hub, fmt.Sprint("dev-", i), time.Time{}); err != nil || d != 0 {
				t.Fatalf("dev-%d still queues %d messages (%v)", i, d, err)
			}
		}
		cancel()
		<-done
	})
}
