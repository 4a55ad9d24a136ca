package engine

import "sync"

// laneItem is an operation waiting in a lane: its ID and registration ID
// only. The operation itself (with the device's payload, up to 96 KB) is
// read from the store when it starts, so a long backlog costs little memory.
type laneItem struct {
	id, regID string
}

// lanes runs background operations. Each operation waits in the lane of the
// webhook URL it calls (custom allocation), or in the default lane. At most
// perLane operations of one lane and at most workers in all run at once, and
// lanes with waiting work take turns for free workers: a webhook that hangs
// holds at most perLane workers while the other lanes keep running.
type lanes struct {
	workers, perLane, backlog int
	// start runs one operation in its own goroutine and calls done after.
	start func(it laneItem, done func())

	mu      sync.Mutex // guards the fields below
	closed  bool
	running int
	byKey   map[string]*lane
	turns   []*lane          // lanes with waiting work and a free slot, in turn order
	queued  map[string]*lane // operation ID → its lane, while waiting or running
}

type lane struct {
	key     string
	running int
	waiting []laneItem // oldest first
	inTurn  bool
}

func newLanes(workers, perLane, backlog int, start func(laneItem, func())) *lanes {
	return &lanes{workers: workers, perLane: perLane, backlog: backlog, start: start,
		byKey: map[string]*lane{}, queued: map[string]*lane{}}
}

// submit queues an operation in lane key. It reports false when the lane's
// backlog is full or the lanes are closed: the operation then stays in the
// store only, and the sweeper submits it again later. An operation already
// queued or running is not queued twice.
func (l *lanes) submit(key string, it laneItem) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	if _, ok := l.queued[it.id]; ok {
		return true
	}
	ln := l.byKey[key]
	if ln == nil {
		ln = &lane{key: key}
		l.byKey[key] = ln
	}
	if len(ln.waiting) >= l.backlog {
		return false
	}
	ln.waiting = append(ln.waiting, it)
	l.queued[it.id] = ln
	l.ready(ln)
	l.pump()
	return true
}

// has reports whether an operation is waiting or running.
func (l *lanes) has(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.queued[id]
	return ok
}

// close stops starting operations; the running ones finish on their own.
func (l *lanes) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}

// ready puts a lane in the turn order if it has waiting work and room.
func (l *lanes) ready(ln *lane) {
	if !ln.inTurn && len(ln.waiting) > 0 && ln.running < l.perLane {
		ln.inTurn = true
		l.turns = append(l.turns, ln)
	}
}

// pump starts waiting operations while workers are free, one per lane per
// turn.
func (l *lanes) pump() {
	for !l.closed && l.running < l.workers && len(l.turns) > 0 {
		ln := l.turns[0]
		l.turns[0] = nil
		l.turns = l.turns[1:]
		ln.inTurn = false
		it := ln.waiting[0]
		ln.waiting[0] = laneItem{}
		ln.waiting = ln.waiting[1:]
		ln.running++
		l.running++
		l.ready(ln) // back to the end of the turn order
		l.start(it, func() { l.done(ln, it.id) })
	}
}

func (l *lanes) done(ln *lane, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ln.running--
	l.running--
	delete(l.queued, id)
	if ln.running == 0 && len(ln.waiting) == 0 && l.byKey[ln.key] == ln {
		delete(l.byKey, ln.key)
	}
	l.ready(ln)
	l.pump()
}
