package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "github.com/opendps/dps", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "true"}}}
	got := fromBuildInfo(bi)
	want := Info{Version: "v1.2.3", Revision: "abc123+dirty", Time: "2026-01-02T03:04:05Z", GoVersion: "go1.26.0"}
	if got != want {
		t.Fatalf("fromBuildInfo = %+v, want %+v", got, want)
	}
	line := got.String("dpsd")
	for _, s := range []string{"dpsd v1.2.3", "abc123+dirty", "2026-01-02T03:04:05Z", "go1.26.0"} {
		if !strings.Contains(line, s) {
			t.Errorf("String() = %q, lacks %q", line, s)
		}
	}
	if got := fromBuildInfo(&debug.BuildInfo{GoVersion: "go1.26.0"}); got.Revision != "unknown" || got.Time != "unknown" || got.Version != "unknown" {
		t.Errorf("without settings: %+v, want unknown fields", got)
	}
}

func TestReadInTest(t *testing.T) {
	if in := Read(); !strings.HasPrefix(in.GoVersion, "go") {
		t.Fatalf("Read().GoVersion = %q", in.GoVersion)
	}
}
