package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/codebeaker/codebeaker/rpc"
	"github.com/codebeaker/codebeaker/sandbox"
	"github.com/codebeaker/codebeaker/sandbox/docker"
)

// The floors of `codebeaker bench`: the same work straight through the
// Docker Engine API, the docker CLI and a bare Deno, with no server in
// between, measured in the same run as the figures.

const (
	benchImage = "codebeaker-python:latest"
	// benchLabel is on every container the floors make; its value is the
	// run's id, so that the run removes its own and nobody else's.
	benchLabel = "io.codebeaker.bench"
)

// benchFloors makes and drives the floors' containers.
type benchFloors struct {
	api       *client.Client
	runID     string
	workspace string // bind-mounted as a session's workspace is
	made      int
}

func newBenchFloors(ctx context.Context, runID, workspace string) (*benchFloors, error) {
	api, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("connect to the Docker engine: %w", err)
	}
	if _, err := api.Ping(ctx); err != nil {
		api.Close()
		return nil, fmt.Errorf("the Docker engine does not answer (the bench needs it for the floors and the python sessions): %w", err)
	}
	if _, err := api.ImageInspect(ctx, benchImage); err != nil {
		api.Close()
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("image %s is not on this host: build it with scripts/build-runtime-images.sh", benchImage)
		}
		return nil, fmt.Errorf("look up image %s: %w", benchImage, err)
	}
	if err := os.MkdirAll(workspace, 0o755); err != nil {
		api.Close()
		return nil, err
	}
	return &benchFloors{api: api, runID: runID, workspace: workspace}, nil
}

// create makes and starts a container configured as sandbox/docker makes a
// session's: the placeholder entrypoint, no network, no capabilities, the
// default limits, the workspace bind mount.
func (f *benchFloors) create(ctx context.Context) (string, error) {
	limits := rpc.DefaultLimits()
	mem := int64(limits.DefaultMemoryMB) << 20
	pids := int64(limits.PidsLimit)
	initProcess := true
	f.made++
	cfg := &container.Config{
		Image:       benchImage,
		Entrypoint:  []string{"sleep", "infinity"},
		Healthcheck: &container.HealthConfig{Test: []string{"NONE"}},
		User:        "0:0",
		WorkingDir:  sandbox.WorkspaceDir,
		Labels:      map[string]string{benchLabel: f.runID},
	}
	host := &container.HostConfig{
		NetworkMode: "none",
		Init:        &initProcess,
		CapDrop:     []string{"ALL"},
		SecurityOpt: []string{"no-new-privileges"},
		Resources: container.Resources{
			Memory:     mem,
			MemorySwap: mem,
			CPUShares:  int64(limits.DefaultCPUShares),
			PidsLimit:  &pids,
		},
		Mounts:    []mount.Mount{{Type: mount.TypeBind, Source: f.workspace, Target: sandbox.WorkspaceDir}},
		LogConfig: container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "1m"}},
	}
	name := fmt.Sprintf("%s-%d", f.runID, f.made)
	created, err := f.api.ContainerCreate(ctx, cfg, host, nil, nil, name)
	if err != nil {
		return "", fmt.Errorf("create a container: %w", err)
	}
	if err := f.api.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		f.remove(created.ID)
		return "", fmt.Errorf("start a container: %w", err)
	}
	return created.ID, nil
}

// remove removes a container of this run, whatever the caller's context.
func (f *benchFloors) remove(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := f.api.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %.12s: %w", id, err)
	}
	return nil
}

// createStart is one timed create+start; the removal is not timed.
func (f *benchFloors) createStart(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	id, err := f.create(ctx)
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	return took, f.remove(id)
}

// exec is what a docker exec costs: exec create, attach (which starts it),
// the output read to its end, and the exit code inspected.
func (f *benchFloors) exec(ctx context.Context, id, want string, args ...string) error {
	created, err := f.api.ContainerExecCreate(ctx, id, container.ExecOptions{
		User: docker.SandboxUser, WorkingDir: sandbox.WorkspaceDir, AttachStdout: true, AttachStderr: true, Cmd: args})
	if err != nil {
		return fmt.Errorf("exec create %q: %w", args, err)
	}
	resp, err := f.api.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return fmt.Errorf("exec attach %q: %w", args, err)
	}
	var stdout, stderr bytes.Buffer
	_, err = stdcopy.StdCopy(&stdout, &stderr, resp.Reader)
	resp.Close()
	if err != nil {
		return fmt.Errorf("read the output of %q: %w", args, err)
	}
	info, err := f.api.ContainerExecInspect(ctx, created.ID)
	if err != nil {
		return fmt.Errorf("exec inspect %q: %w", args, err)
	}
	if info.ExitCode != 0 || stdout.String() != want {
		return fmt.Errorf("%q in a container: exit code %d, stdout %q, stderr %q", args, info.ExitCode, stdout.String(), stderr.String())
	}
	return nil
}

// sweep removes every container this run made that is still there.
func (f *benchFloors) sweep() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return removeLabelled(ctx, f.api, benchLabel+"="+f.runID)
}

func (f *benchFloors) Close() error { return f.api.Close() }

// removeLabelled removes the containers that carry label (key=value).
func removeLabelled(ctx context.Context, api *client.Client, label string) error {
	list, err := api.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", label))})
	if err != nil {
		return fmt.Errorf("list the containers labelled %s: %w", label, err)
	}
	var errs []error
	for _, c := range list {
		err := api.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove container %.12s: %w", c.ID, err))
		}
	}
	return errors.Join(errs...)
}

// dockerRun is `docker run --rm` of print(1) through the docker CLI.
func (f *benchFloors) dockerRun(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "docker", "run", "--rm", "--network", "none", "--label", benchLabel+"="+f.runID,
		benchImage, "python3", "-c", "print(1)")
	return expectOutput(cmd, "1\n")
}

// denoPath finds deno on the PATH or where the install script puts it.
func denoPath() (string, error) {
	if p, err := exec.LookPath("deno"); err == nil {
		return p, nil
	}
	const fallback = "/usr/local/bin/deno"
	if _, err := os.Stat(fallback); err != nil {
		return "", errors.New("deno is neither on the PATH nor at " + fallback)
	}
	return fallback, nil
}

// denoEval is a bare `deno eval`.
func denoEval(ctx context.Context, deno string) error {
	return expectOutput(exec.CommandContext(ctx, deno, "eval", "console.log(1)"), "1\n")
}

func expectOutput(cmd *exec.Cmd, want string) error {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil || stdout.String() != want {
		return fmt.Errorf("%s: %v, stdout %q, stderr %q", strings.Join(cmd.Args, " "), err, stdout.String(), lastBytes(stderr.Bytes(), 500))
	}
	return nil
}

// lastBytes is the end of b, for error messages.
func lastBytes(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// measureFloors measures every floor into b's series.
func (b *benchCommand) measureFloors(ctx context.Context, f *benchFloors) error {
	b.logf("floor: raw Docker API create+start of %s", benchImage)
	create, err := measure(ctx, b.runs, func() (time.Duration, error) { return f.createStart(ctx) })
	if err != nil {
		return err
	}
	b.series["create_start"] = create

	b.logf("floor: raw Docker API exec of true and of python3, taken in turn")
	id, err := f.create(ctx)
	if err != nil {
		return err
	}
	defer f.remove(id)
	// In turn, so that each python run has a true run under the same load
	// to be paired with: their difference is python's own start.
	var execTrue, execPython, pythonStart []float64
	for i := range benchWarmups + b.runs {
		t, err := timed(func() error { return f.exec(ctx, id, "", "true") })()
		if err != nil {
			return err
		}
		p, err := timed(func() error { return f.exec(ctx, id, "1\n", "python3", "-c", "print(1)") })()
		if err != nil {
			return err
		}
		if i >= benchWarmups {
			execTrue, execPython = append(execTrue, ms(t)), append(execPython, ms(p))
			pythonStart = append(pythonStart, ms(p-t))
		}
	}
	b.series["exec_true"], b.series["exec_python"], b.series["python_start"] = execTrue, execPython, pythonStart
	if err := f.remove(id); err != nil {
		return err
	}

	b.logf("floor: docker run --rm %s python3 -c 'print(1)'", benchImage)
	if b.series["docker_run"], err = measure(ctx, b.runs, timed(func() error { return f.dockerRun(ctx) })); err != nil {
		return err
	}

	deno, err := denoPath()
	if err != nil {
		b.note("no Deno figure: " + err.Error())
		return nil
	}
	b.logf("floor: %s eval 'console.log(1)'", deno)
	if b.series["deno_eval"], err = measure(ctx, b.runs, timed(func() error { return denoEval(ctx, deno) })); err != nil {
		return err
	}
	return nil
}
