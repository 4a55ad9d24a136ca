package engine

import (
	"fmt"
	"sync"
	"testing"
)

// fakeRuns records what lanes start; finish ends one.
type fakeRuns struct {
	mu      sync.Mutex
	running map[string]func()
	order   []string
}

func (f *fakeRuns) start(it laneItem, done func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running[it.id] = done
	f.order = append(f.order, it.id)
}

func (f *fakeRuns) finish(t *testing.T, id string) {
	t.Helper()
	f.mu.Lock()
	done, ok := f.running[id]
	delete(f.running, id)
	f.mu.Unlock()
	if !ok {
		t.Fatalf("%s is not running", id)
	}
	done()
}

func (f *fakeRuns) started() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.order...)
}

// TestLanes: at most perLane of a lane and workers in all run at once,
// lanes take turns for freed workers, a full lane refuses more, and one
// operation is never queued twice.
func TestLanes(t *testing.T) {
	f := &fakeRuns{running: map[string]func(){}}
	l := newLanes(4, 2, 3, f.start)
	for i := range 5 { // lane A: 2 run, 3 wait (its backlog)
		if !l.submit("A", laneItem{id: fmt.Sprintf("a%d", i)}) {
			t.Fatalf("a%d refused", i)
		}
	}
	if l.submit("A", laneItem{id: "a5"}) {
		t.Errorf("a full lane accepted more")
	}
	if !l.submit("A", laneItem{id: "a0"}) || len(f.started()) != 2 {
		t.Errorf("resubmitting a running operation: started %v", f.started())
	}
	for i := range 3 {
		l.submit("B", laneItem{id: fmt.Sprintf("b%d", i)})
		l.submit("C", laneItem{id: fmt.Sprintf("c%d", i)})
	}
	// Workers: a0 a1 (A at its limit), b0, c0.
	if got := fmt.Sprint(f.started()); got != "[a0 a1 b0 c0]" {
		t.Fatalf("started %s", got)
	}
	// Freed workers go to the lanes in turn (the longest waiting first),
	// never past a lane's limit: A's own freed worker goes to B, which
	// waited since b1 came.
	f.finish(t, "a0") // turns B C A: b1
	f.finish(t, "b0") // C A B: c1
	f.finish(t, "c0") // A B C: a2
	f.finish(t, "a1") // B C A: b2
	f.finish(t, "b1") // C A (B has no more): c2, and C is at its limit
	if got := fmt.Sprint(f.started()[4:]); got != "[b1 c1 a2 b2 c2]" {
		t.Errorf("then started %s", got)
	}
	if !l.has("a4") || l.has("a0") {
		t.Errorf("has: a4 (waiting) %v, a0 (done) %v", l.has("a4"), l.has("a0"))
	}
	l.close()
	f.finish(t, "a2")
	if len(f.started()) != 9 || l.submit("D", laneItem{id: "d0"}) {
		t.Errorf("closed lanes still start work: %v", f.started())
	}
}
