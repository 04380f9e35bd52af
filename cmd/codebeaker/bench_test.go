package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
)

// TestBenchReport runs `codebeaker bench` as a user would, with few runs,
// and checks what it prints: every figure next to its floor, every number
// above 0, every ratio the figure's p50 over the floor's, and nothing it
// started left behind. Timing is not checked: it is a benchmark.
func TestBenchReport(t *testing.T) {
	api := needDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, binary, "bench", "-n", "2", "-skip-idle", "-json")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("codebeaker bench: %v\n%s", err, stderr.String())
	}
	t.Logf("codebeaker bench -n 2 -skip-idle -json took %s:\n%s", time.Since(start).Round(time.Second), stdout.String())

	// Its own reading of the JSON, so that a renamed field fails here.
	var report struct {
		RunID   string `json:"runId"`
		Dir     string `json:"dir"`
		Runs    int    `json:"runs"`
		Pool    bool   `json:"pool"`
		Figures []struct {
			ID, Name, Floor                            string
			P50Ms, P90Ms, FloorP50Ms, FloorP90Ms, Goal float64
			Ratio                                      float64
		} `json:"figures"`
		Floors []struct {
			ID, Name     string
			P50Ms, P90Ms float64
		} `json:"floors"`
		Refill *struct {
			PoolSize, Rounds           int
			Seconds, SessionsPerSecond float64
		} `json:"refill"`
		Idle  json.RawMessage `json:"idle"`
		Notes []string        `json:"notes"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &report); err != nil {
		t.Fatalf("the output is not the JSON report: %v", err)
	}
	if report.Runs != 2 {
		t.Errorf("runs %d, want 2", report.Runs)
	}
	goals := map[string]float64{"shell_true": 0.2, "shell_python": 1.3, "create_pool": 0.05, "create_cold": 1.2, "oneshot": 0.1, "deno_code": 1.2}
	seen := map[string]int{}
	for _, f := range report.Figures {
		seen[f.ID]++
		goal, known := goals[f.ID]
		if !known {
			t.Errorf("unknown figure %q", f.ID)
			continue
		}
		if f.Name == "" || f.Floor == "" {
			t.Errorf("figure %s: name %q, floor %q", f.ID, f.Name, f.Floor)
		}
		if !(f.P50Ms > 0 && f.P90Ms > 0 && f.FloorP50Ms > 0 && f.FloorP90Ms > 0 && f.Ratio > 0) {
			t.Errorf("figure %s: a number is not above 0: %+v", f.ID, f)
		}
		if f.P90Ms < f.P50Ms || f.FloorP90Ms < f.FloorP50Ms {
			t.Errorf("figure %s: a p90 below its p50: %+v", f.ID, f)
		}
		if want := f.P50Ms / f.FloorP50Ms; math.Abs(f.Ratio-want) > 1e-9*want {
			t.Errorf("figure %s: ratio %v, but p50 %v / floor p50 %v is %v", f.ID, f.Ratio, f.P50Ms, f.FloorP50Ms, want)
		}
		if f.Goal != goal {
			t.Errorf("figure %s: goal %v, the issue's is %v", f.ID, f.Goal, goal)
		}
	}
	for id := range goals {
		if seen[id] != 1 {
			t.Errorf("figure %s is in the report %d times, want once", id, seen[id])
		}
	}
	floors := map[string]bool{}
	for _, f := range report.Floors {
		floors[f.ID] = true
		if f.Name == "" || !(f.P50Ms > 0 && f.P90Ms > 0) {
			t.Errorf("floor %+v: no name or a number not above 0", f)
		}
	}
	for _, id := range []string{"create_start", "exec_true", "exec_python", "python_start", "docker_run", "deno_eval"} {
		if !floors[id] {
			t.Errorf("floor %s is missing", id)
		}
	}

	// Once serve has a pool, the bench must use it and time its refill.
	help, _ := exec.Command(binary, "serve", "--help").CombinedOutput()
	if strings.Contains(string(help), "--pool-size") {
		if !report.Pool || report.Refill == nil {
			t.Errorf("serve has --pool-size, but the bench reports pool %v, refill %+v", report.Pool, report.Refill)
		} else if r := report.Refill; r.PoolSize < 2 || r.Rounds < 1 || !(r.Seconds > 0 && r.SessionsPerSecond > 0) {
			t.Errorf("refill %+v: a number not above 0", r)
		}
	} else if report.Pool || report.Refill != nil || len(report.Notes) == 0 {
		t.Errorf("serve has no --pool-size, but the bench reports pool %v, refill %+v, notes %q", report.Pool, report.Refill, report.Notes)
	}
	if len(report.Idle) > 0 && string(report.Idle) != "null" {
		t.Errorf("-skip-idle, but the report has idle %s", report.Idle)
	}

	// Nothing left: the temp folder, the floors' containers, the servers'.
	if report.RunID == "" || report.Dir == "" {
		t.Fatalf("no runId or dir in the report")
	}
	if _, err := os.Stat(report.Dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the bench's folder %s is still there (%v)", report.Dir, err)
	}
	left, err := api.ContainerList(context.Background(), container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", benchLabel+"="+report.RunID))})
	if err != nil {
		t.Fatal(err)
	}
	all, err := api.ContainerList(context.Background(), container.ListOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range all {
		for _, m := range c.Mounts {
			if strings.HasPrefix(m.Source, report.Dir+"/") {
				left = append(left, c)
			}
		}
	}
	for _, c := range left {
		t.Errorf("container %.12s %v (%s) of the bench is still there", c.ID, c.Names, c.State)
	}
}
