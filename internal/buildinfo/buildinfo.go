// Package buildinfo reports what a dps binary was built from: the module
// version, the VCS revision and time, and the Go version, from the build
// information the Go toolchain embeds (runtime/debug.ReadBuildInfo).
package buildinfo

import (
	"fmt"
	"runtime/debug"
)

// Info is what a binary was built from; a field the build did not record
// is "unknown" (go run and go test record no VCS settings).
type Info struct {
	Version   string // module version, "(devel)" for a build in a checkout
	Revision  string // VCS revision, "+dirty" appended when modified
	Time      string // VCS commit time (RFC 3339)
	GoVersion string
}

// Read returns the running binary's build information.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Version: "unknown", Revision: "unknown", Time: "unknown", GoVersion: "unknown"}
	}
	return fromBuildInfo(bi)
}

func fromBuildInfo(bi *debug.BuildInfo) Info {
	in := Info{Version: bi.Main.Version, Revision: "unknown", Time: "unknown", GoVersion: bi.GoVersion}
	if in.Version == "" {
		in.Version = "unknown"
	}
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.time":
			in.Time = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified && in.Revision != "unknown" {
		in.Revision += "+dirty"
	}
	return in
}

// String is the one line `dpsd --version` and `dpsctl version` print.
func (in Info) String(program string) string {
	return fmt.Sprintf("%s %s revision=%s time=%s go=%s", program, in.Version, in.Revision, in.Time, in.GoVersion)
}
