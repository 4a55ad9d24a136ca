// Package allocation holds the built-in allocation policies: hashed
// (weighted rendezvous hashing), geoLatency and static. Each is a pure
// function of the request. The custom policy (a webhook) lives in
// internal/allocation/webhookalloc.
package allocation

import (
	"context"
	"math"
	"strings"

	"github.com/opendps/dps"
)

// Hashed assigns a device by weighted rendezvous hashing of its lower-cased
// registration ID: deterministic, proportional to allocationWeight, and
// stable when a hub is added (only the new hub's share of devices moves).
type Hashed struct{}

// Allocate picks the highest-scoring candidate.
func (Hashed) Allocate(_ context.Context, req dps.AllocationRequest) (dps.Assignment, error) {
	h, ok := Pick(req.RegistrationID, req.Candidates)
	if !ok {
		return dps.Assignment{}, noHub()
	}
	return dps.Assignment{Hub: h.HostName}, nil
}

// GeoLatency prefers hubs whose location equals this instance's Location,
// hashing among them; with none there, it hashes among all candidates.
type GeoLatency struct {
	Location string
}

// Allocate picks a hub near this instance.
func (g GeoLatency) Allocate(_ context.Context, req dps.AllocationRequest) (dps.Assignment, error) {
	var near []dps.LinkedHub
	if g.Location != "" {
		for _, h := range req.Candidates {
			if strings.EqualFold(h.Location, g.Location) {
				near = append(near, h)
			}
		}
	}
	if len(near) == 0 {
		near = req.Candidates
	}
	h, ok := Pick(req.RegistrationID, near)
	if !ok {
		return dps.Assignment{}, noHub()
	}
	return dps.Assignment{Hub: h.HostName}, nil
}

// Static assigns the single hub the enrollment names.
type Static struct{}

// Allocate returns the one candidate.
func (Static) Allocate(_ context.Context, req dps.AllocationRequest) (dps.Assignment, error) {
	switch len(req.Candidates) {
	case 1:
		return dps.Assignment{Hub: req.Candidates[0].HostName}, nil
	case 0:
		return dps.Assignment{}, noHub()
	default:
		return dps.Assignment{}, &dps.AllocationFailure{Code: dps.CodeInvalid, Message: "static allocation requires the enrollment to name exactly one IoT hub"}
	}
}

func noHub() error {
	return &dps.AllocationFailure{Code: dps.CodeInvalid, Message: "no linked IoT hub is available for this enrollment"}
}

// Pick returns the candidate with the highest weighted rendezvous score for
// registrationID (compared case-insensitively).
func Pick(registrationID string, hubs []dps.LinkedHub) (dps.LinkedHub, bool) {
	if len(hubs) == 0 {
		return dps.LinkedHub{}, false
	}
	if len(hubs) == 1 {
		return hubs[0], true
	}
	id := dps.FoldID(registrationID)
	base := fnv(offset64, id)
	best, bestScore := -1, math.Inf(-1)
	for i, h := range hubs {
		w := h.AllocationWeight
		if w <= 0 {
			w = 1
		}
		x := mix(fnv(fnv(base, "\x00"), dps.FoldID(h.HostName)))
		u := (float64(x>>11) + 0.5) / (1 << 53) // in (0,1)
		score := -float64(w) / math.Log(u)
		if score > bestScore || (score == bestScore && h.HostName < hubs[best].HostName) {
			best, bestScore = i, score
		}
	}
	return hubs[best], true
}

const (
	offset64 = 14695981039346656037
	prime64  = 1099511628211
)

func fnv(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime64
	}
	return h
}

// mix is the splitmix64 finaliser; FNV alone mixes its last bytes poorly.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
