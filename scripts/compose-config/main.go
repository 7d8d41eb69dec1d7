// compose-config loads a compose file the way `docker compose config` does (compose-spec/compose-go: the compose
// specification's JSON schema, interpolation from the environment, normalisation, consistency checks) and prints
// the resolved project as YAML. It exists because this machine has no `docker compose` v2 plugin (Debian bookworm
// ships only docker-compose v1, which predates the specification's top-level `name`). See docs/deployment.md.
//
//	compose-config [-f docker-compose.yml] [--profile p]...
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var files, profiles list
	flag.Var(&files, "f", "compose file (repeatable; default docker-compose.yml)")
	flag.Var(&profiles, "profile", "profile to enable (repeatable)")
	flag.Parse()
	if len(files) == 0 {
		files = list{"docker-compose.yml"}
	}
	opts, err := cli.NewProjectOptions(files,
		cli.WithOsEnv,
		cli.WithWorkingDirectory("."),
		cli.WithProfiles(profiles),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		fail(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	out, err := project.MarshalYAML()
	if err != nil {
		fail(err)
	}
	os.Stdout.Write(out)
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "compose-config: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
	os.Exit(1)
}
