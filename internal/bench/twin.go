package bench

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opendps/dps/device"
)

// TwinOptions configure a twins-and-methods run (`dpsctl bench hub
// --twin`): the devices connect over TLS MQTT; then for Duration each
// patches its reported properties, one request at a time, as fast as
// answered; then for Duration each reads its twin (GET); then Samples
// desired-property updates are made through the service API (PATCH
// /twins/{id}), ServiceInFlight at a time, each timed until its device
// receives the notification; then Samples direct methods (POST
// /twins/{id}/methods), timed until the service call returns the device's
// 200.
type TwinOptions struct {
	Address  string // host:port of the MQTT endpoint
	Host     string
	GroupKey string
	IDs      []string
	TLS      *tls.Config
	// ConnectConcurrency bounds the connects under way (default 32).
	ConnectConcurrency int
	Duration           time.Duration
	Samples            int
	// ServiceInFlight bounds the service calls under way (default 4).
	ServiceInFlight int
	// Service sends one request to the hub's service API and returns the
	// answer's body (an error for a status of 300 or more).
	Service  func(ctx context.Context, method, path string, body []byte) ([]byte, error)
	Progress io.Writer
}

// OpSummary is one kind of operation of a twin run.
type OpSummary struct {
	Count     int     `json:"count"`
	Failed    int     `json:"failed"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"perSecond"`
	LatencyMS Latency `json:"latencyMs"`
}

// TwinSummary is the result of a twin run.
type TwinSummary struct {
	Devices         int     `json:"devices"`
	Connected       int     `json:"connected"`
	ConnectSeconds  float64 `json:"connectSeconds"`
	ServiceInFlight int     `json:"serviceInFlight"`
	// ReportedPatch and TwinGet are device requests, answered over MQTT.
	ReportedPatch OpSummary `json:"reportedPatch"`
	TwinGet       OpSummary `json:"twinGet"`
	// Desired: from the service's PATCH being sent until the device got
	// the notification.
	Desired OpSummary `json:"desiredNotification"`
	// Method: the service's POST /twins/{id}/methods until it returned
	// the device's answer.
	Method   OpSummary      `json:"methodRoundTrip"`
	Failures map[string]int `json:"failures"`
}

func (s TwinSummary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "hub twins and methods, %d devices (%d connected in %.2fs), %d service calls in flight\n", s.Devices, s.Connected, s.ConnectSeconds, s.ServiceInFlight)
	for _, r := range []struct {
		name string
		o    OpSummary
	}{{"reported PATCH", s.ReportedPatch}, {"twin GET", s.TwinGet}, {"desired → device", s.Desired}, {"method round trip", s.Method}} {
		fmt.Fprintf(&b, "  %-18s %7d in %6.2fs, %7.0f/s, ms: p50 %.1f  p90 %.1f  p99 %.1f  max %.1f", r.name+":", r.o.Count, r.o.Seconds, r.o.PerSecond,
			r.o.LatencyMS.P50, r.o.LatencyMS.P90, r.o.LatencyMS.P99, r.o.LatencyMS.Max)
		if r.o.Failed > 0 {
			fmt.Fprintf(&b, "  (%d failed)", r.o.Failed)
		}
		b.WriteString("\n")
	}
	if len(s.Failures) > 0 {
		fmt.Fprintf(&b, "  failures:           %v\n", s.Failures)
	}
	return b.String()
}

// RunTwin runs the four phases and closes the devices.
func RunTwin(ctx context.Context, o TwinOptions) (TwinSummary, error) {
	if len(o.IDs) == 0 || o.Duration <= 0 || o.Samples <= 0 || o.Service == nil {
		return TwinSummary{}, errors.New("bench: twin runs need devices, a duration, a sample count and the service API")
	}
	if o.ConnectConcurrency <= 0 {
		o.ConnectConcurrency = 32
	}
	if o.ServiceInFlight <= 0 {
		o.ServiceInFlight = 4
	}
	s := TwinSummary{Devices: len(o.IDs), ServiceInFlight: o.ServiceInFlight, Failures: map[string]int{}}
	var mu sync.Mutex
	fail := func(what string, err error) {
		mu.Lock()
		s.Failures[what+": "+firstLine(err.Error())]++
		mu.Unlock()
	}

	// Desired notifications carry {"bench": k}; waiting[k] gets the time
	// the device received it.
	var waiting sync.Map // int64 → chan time.Time
	hubs := make([]*device.Hub, len(o.IDs))
	t0 := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, o.ConnectConcurrency)
	for i, id := range o.IDs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			key, err := device.DeriveKey(o.GroupKey, id)
			var h *device.Hub
			if err == nil {
				h, err = device.ConnectHub(ctx, device.HubOptions{Host: o.Host, DeviceID: id, Credential: device.SymmetricKey(key),
					Address: o.Address, TLS: o.TLS, KeepAlive: 10 * time.Minute})
			}
			if err == nil {
				err = h.OnDesired(ctx, func(_ int64, patch json.RawMessage) {
					at := time.Now()
					var p struct {
						Bench *int64 `json:"bench"`
					}
					if json.Unmarshal(patch, &p) == nil && p.Bench != nil {
						if ch, ok := waiting.Load(*p.Bench); ok {
							ch.(chan time.Time) <- at
						}
					}
				})
			}
			if err == nil {
				err = h.OnMethod(ctx, func(string, json.RawMessage) (int, any) { return 200, json.RawMessage(`{"ok":true}`) })
			}
			if err != nil {
				if h != nil {
					h.Close()
				}
				fail("connect", err)
				return
			}
			hubs[i] = h
		})
	}
	wg.Wait()
	s.ConnectSeconds = time.Since(t0).Seconds()
	defer func() {
		for _, h := range hubs {
			if h != nil {
				h.Close()
			}
		}
	}()
	var up []*device.Hub
	var upIDs []string
	for i, h := range hubs {
		if h != nil {
			up = append(up, h)
			upIDs = append(upIDs, o.IDs[i])
		}
	}
	s.Connected = len(up)
	if s.Connected == 0 {
		return s, errors.New("bench: no device connected")
	}
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "%d of %d devices connected in %.2fs\n", s.Connected, s.Devices, s.ConnectSeconds)
	}

	// Device requests: each device one at a time, for the duration.
	deviceOps := func(name string, op func(ctx context.Context, h *device.Hub, n int) error) OpSummary {
		runCtx, cancel := context.WithTimeout(ctx, o.Duration)
		defer cancel()
		var (
			lat    [][]time.Duration
			failed atomic.Int64
			wg     sync.WaitGroup
		)
		start := time.Now()
		for _, h := range up {
			wg.Go(func() {
				mine := make([]time.Duration, 0, 64)
				for n := 0; runCtx.Err() == nil; n++ {
					t := time.Now()
					err := op(runCtx, h, n)
					d := time.Since(t)
					if err != nil {
						if runCtx.Err() != nil && ctx.Err() == nil {
							break // the duration ended with this request unanswered: not counted
						}
						failed.Add(1)
						fail(name, err)
						continue
					}
					mine = append(mine, d)
				}
				mu.Lock()
				lat = append(lat, mine)
				mu.Unlock()
			})
		}
		wg.Wait()
		return opSummary(slices.Concat(lat...), int(failed.Load()), min(time.Since(start), o.Duration))
	}
	s.ReportedPatch = deviceOps("reported PATCH", func(ctx context.Context, h *device.Hub, n int) error {
		_, err := h.UpdateReported(ctx, json.RawMessage(`{"bench":{"n":`+strconv.Itoa(n)+`,"at":"`+time.Now().UTC().Format(time.RFC3339Nano)+`"}}`))
		return err
	})
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "reported PATCH: %.0f/s\n", s.ReportedPatch.PerSecond)
	}
	s.TwinGet = deviceOps("twin GET", func(ctx context.Context, h *device.Hub, _ int) error {
		_, err := h.Twin(ctx)
		return err
	})
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "twin GET: %.0f/s\n", s.TwinGet.PerSecond)
	}

	// Service calls: Samples of them, ServiceInFlight at a time, device
	// k mod Connected for the k-th.
	serviceOps := func(call func(ctx context.Context, k int64, id string) (time.Duration, error)) OpSummary {
		var (
			next   atomic.Int64
			failed atomic.Int64
			lat    [][]time.Duration
			wg     sync.WaitGroup
		)
		start := time.Now()
		for range o.ServiceInFlight {
			wg.Go(func() {
				var mine []time.Duration
				for {
					k := next.Add(1) - 1
					if k >= int64(o.Samples) || ctx.Err() != nil {
						break
					}
					d, err := call(ctx, k, upIDs[int(k)%len(upIDs)])
					if err != nil {
						failed.Add(1)
						continue
					}
					mine = append(mine, d)
				}
				mu.Lock()
				lat = append(lat, mine)
				mu.Unlock()
			})
		}
		wg.Wait()
		return opSummary(slices.Concat(lat...), int(failed.Load()), time.Since(start))
	}
	s.Desired = serviceOps(func(ctx context.Context, k int64, id string) (time.Duration, error) {
		ch := make(chan time.Time, 1)
		waiting.Store(k, ch)
		defer waiting.Delete(k)
		t := time.Now()
		if _, err := o.Service(ctx, "PATCH", "/twins/"+id, []byte(`{"properties":{"desired":{"bench":`+strconv.FormatInt(k, 10)+`}}}`)); err != nil {
			fail("desired PATCH", err)
			return 0, err
		}
		select {
		case at := <-ch:
			return at.Sub(t), nil
		case <-time.After(10 * time.Second):
			err := errors.New("no notification within 10s")
			fail("desired notification", err)
			return 0, err
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	})
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "desired → device: p99 %.1f ms\n", s.Desired.LatencyMS.P99)
	}
	s.Method = serviceOps(func(ctx context.Context, k int64, id string) (time.Duration, error) {
		t := time.Now()
		b, err := o.Service(ctx, "POST", "/twins/"+id+"/methods",
			[]byte(`{"methodName":"bench","payload":{"k":`+strconv.FormatInt(k, 10)+`},"responseTimeoutInSeconds":10}`))
		d := time.Since(t)
		if err != nil {
			fail("method", err)
			return 0, err
		}
		var r struct {
			Status int `json:"status"`
		}
		if err := json.Unmarshal(b, &r); err != nil || r.Status != 200 {
			err = fmt.Errorf("method answered %s", firstLine(string(b)))
			fail("method", err)
			return 0, err
		}
		return d, nil
	})
	return s, ctx.Err()
}

func opSummary(lat []time.Duration, failed int, elapsed time.Duration) OpSummary {
	slices.Sort(lat)
	return OpSummary{Count: len(lat), Failed: failed, Seconds: elapsed.Seconds(), PerSecond: float64(len(lat)) / elapsed.Seconds(), LatencyMS: percentiles(lat)}
}
