package faults_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/opendps/dps/internal/faults"
)

func rule(name string, m faults.Match, a faults.Action) faults.Rule {
	return faults.Rule{Name: name, Match: m, Action: a}
}

func TestMatching(t *testing.T) {
	var log bytes.Buffer
	var counted []string
	in, err := faults.New(faults.Options{Logger: slog.New(slog.NewTextHandler(&log, nil)), Injected: func(r string) { counted = append(counted, r) }},
		faults.Rule{Name: "flaky-register", Match: faults.Match{RegistrationID: "flaky-*", Transport: "any", Operation: "register"},
			Action: faults.Action{Status: 429, ErrorCode: 429001, RetryAfterSeconds: 3}, Times: 2},
		rule("mqtt-only", faults.Match{Transport: "MQTT", Operation: "poll"}, faults.Action{Status: 503}),
		rule("group", faults.Match{Group: "fleet-?", Operation: "poll"}, faults.Action{DelayMs: 10}),
		rule("enr", faults.Match{Enrollment: "Exact-Dev"}, faults.Action{Status: 500}),
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p := faults.Point{Transport: "https", Operation: "register", RegistrationID: "FLAKY-1"}
	for i := range 2 {
		f, ok := in.Check(ctx, p)
		if !ok || f.Rule != "flaky-register" || f.Action.RetryAfterSeconds != 3 {
			t.Fatalf("match %d: %+v %v", i, f, ok)
		}
	}
	if f, ok := in.Check(ctx, p); ok {
		t.Fatalf("times: 2 injected a third time: %+v", f)
	}
	for _, c := range []struct {
		p    faults.Point
		want string
	}{
		{faults.Point{Transport: "https", Operation: "register", RegistrationID: "other"}, ""},
		{faults.Point{Transport: "mqtt", Operation: "poll", RegistrationID: "x"}, "mqtt-only"},
		{faults.Point{Transport: "mqttws", Operation: "poll", RegistrationID: "x"}, ""},
		{faults.Point{Transport: "https", Operation: "poll", RegistrationID: "x", Group: "fleet-1"}, ""}, // group not known
		{faults.Point{Transport: "https", Operation: "poll", RegistrationID: "x", Group: "Fleet-1", GroupKnown: true}, "group"},
		{faults.Point{Transport: "https", Operation: "poll", RegistrationID: "x", Group: "fleet-10", GroupKnown: true}, ""},
		{faults.Point{Transport: "https", Operation: "twin", RegistrationID: "exact-dev"}, "enr"},
		{faults.Point{Transport: "https", Operation: "twin", RegistrationID: "exact-dev2"}, ""},
	} {
		f, ok := in.Check(ctx, c.p)
		if f.Rule != c.want || ok != (c.want != "") {
			t.Errorf("%+v: got %q %v, want %q", c.p, f.Rule, ok, c.want)
		}
	}
	st := in.List()
	if len(st) != 4 || st[0].Injected != 2 || st[1].Injected != 1 {
		t.Fatalf("statuses %+v", st)
	}
	if len(counted) != 5 || counted[0] != "flaky-register" {
		t.Fatalf("observer saw %v", counted)
	}
	if !strings.Contains(log.String(), `msg="fault injected" rule=flaky-register registration_id=FLAKY-1 transport=https operation=register`) {
		t.Fatalf("log: %s", log.String())
	}
	// Replacing a rule starts its count again; deleting returns the count.
	if _, err := in.Put(p2(faults.Rule{Name: "FLAKY-register", Match: faults.Match{RegistrationID: "flaky-*"}, Action: faults.Action{Status: 500}, Times: 1})); err != nil {
		t.Fatal(err)
	}
	if f, ok := in.Check(ctx, p); !ok || f.Action.Status != 500 {
		t.Fatalf("replaced rule: %+v %v", f, ok)
	}
	if st, ok := in.Delete("flaky-register"); !ok || st.Injected != 1 {
		t.Fatalf("delete: %+v %v", st, ok)
	}
	if _, ok := in.Delete("flaky-register"); ok {
		t.Fatal("deleted twice")
	}
}

func p2(r faults.Rule) faults.Rule { return r }

func TestProbability(t *testing.T) {
	draws := []float64{0.1, 0.9, 0.2, 0.95}
	in, _ := faults.New(faults.Options{Random: func() float64 { d := draws[0]; draws = draws[1:]; return d }},
		faults.Rule{Name: "p", Action: faults.Action{Status: 503}, Probability: 0.3})
	var got []bool
	for range 4 {
		_, ok := in.Check(context.Background(), faults.Point{Transport: "https", Operation: "poll"})
		got = append(got, ok)
	}
	if want := []bool{true, false, true, false}; !equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func equal(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestHold(t *testing.T) {
	in, _ := faults.New(faults.Options{}, rule("slow", faults.Match{RegistrationID: "slow-*"}, faults.Action{AssigningPolls: 2}))
	ctx := context.Background()
	p := faults.Point{Transport: "mqtt", Operation: "poll", RegistrationID: "slow-1"}
	if _, ok := in.Check(ctx, p); ok {
		t.Fatal("Check injected an assigningPolls rule")
	}
	for i, want := range []bool{true, true, false, false} {
		if got := in.Hold(ctx, p, "op-1"); got != want {
			t.Fatalf("poll %d of op-1: held %v, want %v", i+1, got, want)
		}
	}
	if !in.Hold(ctx, p, "op-2") {
		t.Fatal("another operation not held")
	}
	if in.Hold(ctx, faults.Point{Transport: "mqtt", Operation: "poll", RegistrationID: "fast"}, "op-3") {
		t.Fatal("unmatched device held")
	}
	if st := in.List(); st[0].Injected != 3 {
		t.Fatalf("injected %d, want 3", st[0].Injected)
	}
}

func TestAfterConnackOnlyAtConnect(t *testing.T) {
	in, _ := faults.New(faults.Options{}, rule("drop", faults.Match{Operation: "hubConnect"}, faults.Action{Drop: "afterconnack"}),
		rule("lost", faults.Match{Operation: "register"}, faults.Action{Drop: "beforeResponse"}))
	ctx := context.Background()
	if _, ok := in.Check(ctx, faults.Point{Transport: "mqtt", Operation: "hubConnect"}); ok {
		t.Fatal("afterConnack applied to a request")
	}
	if f, ok := in.Check(ctx, faults.Point{Transport: "mqtt", Operation: "hubConnect", Connect: true}); !ok || f.Action.Drop != faults.DropAfterConnack {
		t.Fatalf("afterConnack at connect: %+v %v", f, ok)
	}
	if _, ok := in.Check(ctx, faults.Point{Transport: "mqtt", Operation: "register", Connect: true}); ok {
		t.Fatal("beforeResponse applied at connect")
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		r    faults.Rule
		want string // "" valid
	}{
		{rule("ok", faults.Match{RegistrationID: "a*", Transport: "mqttws", Operation: "Poll"}, faults.Action{Status: 429, RetryAfterSeconds: 3}), ""},
		{rule("", faults.Match{}, faults.Action{Status: 500}), "name"},
		{rule("a/b", faults.Match{}, faults.Action{Status: 500}), "name"},
		{rule("x", faults.Match{RegistrationID: "[a"}, faults.Action{Status: 500}), "match.registrationId"},
		{rule("x", faults.Match{Transport: "amqp"}, faults.Action{Status: 500}), "match.transport"},
		{rule("x", faults.Match{Operation: "delete"}, faults.Action{Status: 500}), "match.operation"},
		{rule("x", faults.Match{}, faults.Action{}), "action"},
		{rule("x", faults.Match{}, faults.Action{Status: 500, DelayMs: 3}), "action"},
		{rule("x", faults.Match{}, faults.Action{Status: 200}), "action.status"},
		{rule("x", faults.Match{}, faults.Action{Status: 429, ErrorCode: 12}), "action.errorCode"},
		{rule("x", faults.Match{}, faults.Action{DelayMs: 5, RetryAfterSeconds: 2}), "action.retryAfterSeconds"},
		{rule("x", faults.Match{}, faults.Action{Drop: "later"}), "action.drop"},
		{rule("x", faults.Match{Transport: "https"}, faults.Action{Drop: "afterConnack"}), "action.drop"},
		{rule("x", faults.Match{Operation: "telemetry"}, faults.Action{AssigningPolls: 2}), "action.assigningPolls"},
		{faults.Rule{Name: "x", Action: faults.Action{Status: 500}, Probability: 1.5}, "probability"},
		{faults.Rule{Name: "x", Action: faults.Action{Status: 500}, Times: -1}, "times"},
	} {
		got, err := c.r.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: %v", c.r, err)
		case c.want != "" && (err == nil || !strings.HasPrefix(err.Error(), c.want+":")):
			t.Errorf("%+v: error %v, want one about %s", c.r, err, c.want)
		case c.want == "" && (got.Match.Operation != "poll" || got.Match.Transport != "mqttws"):
			t.Errorf("not normalised: %+v", got.Match)
		}
	}
	if _, err := faults.New(faults.Options{}, rule("a", faults.Match{}, faults.Action{Status: 500}), rule("A", faults.Match{}, faults.Action{Status: 500})); err == nil {
		t.Fatal("two rules of one name accepted")
	}
}

// FuzzRule: any JSON rule either fails validation or, validated, can be
// checked against any point without panicking, and validates again as is.
func FuzzRule(f *testing.F) {
	f.Add(`{"name":"r","match":{"registrationId":"flaky-*","transport":"any","operation":"register"},"action":{"status":429,"errorCode":429001,"retryAfterSeconds":3},"times":2}`, "flaky-1", "https", "register")
	f.Add(`{"name":"r","match":{"registrationId":"[a-"},"action":{"drop":"afterConnack"}}`, "a", "mqtt", "hubConnect")
	f.Add(`{"name":"g","match":{"group":"\\"},"action":{"assigningPolls":3},"probability":0.5}`, "x", "mqttws", "poll")
	f.Fuzz(func(t *testing.T, js, id, transport, op string) {
		var r faults.Rule
		if json.Unmarshal([]byte(js), &r) != nil {
			return
		}
		v, err := r.Validate()
		if err != nil {
			return
		}
		if _, err := v.Validate(); err != nil {
			t.Fatalf("a normalised rule fails validation: %v", err)
		}
		in, err := faults.New(faults.Options{}, v)
		if err != nil {
			t.Fatal(err)
		}
		p := faults.Point{Transport: transport, Operation: op, RegistrationID: id, Group: id, GroupKnown: true}
		in.Check(context.Background(), p)
		in.Hold(context.Background(), p, id)
		p.Connect = true
		in.Check(context.Background(), p)
	})
}
