package eventlog_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/eventlog/eventlogtest"
)

var benchPayload = eventlog.CommandCompletedData{
	CommandID: "01JBENCH000000000000000000", Type: "execute", Success: true,
	DurationMs: 12, StdoutBytes: 12, Stdout: "hello world\n",
}

// BenchmarkAppend appends one event at a time from one goroutine: every
// append pays a commit and its fsyncs.
func BenchmarkAppend(b *testing.B) {
	l := eventlogtest.Open(b)
	r := eventlog.Record{SessionID: "bench", Type: eventlog.CommandCompleted, Data: benchPayload}
	for b.Loop() {
		if _, err := l.Append(context.Background(), r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkAppendParallel appends one event at a time from many goroutines:
// group commit lets them share commits, so events/s over BenchmarkAppend's
// is its gain.
func BenchmarkAppendParallel(b *testing.B) {
	l := eventlogtest.Open(b)
	var n atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := eventlog.Record{SessionID: "bench", Type: eventlog.CommandCompleted, Data: benchPayload}
		for pb.Next() {
			if _, err := l.Append(context.Background(), r); err != nil {
				b.Error(err)
				return
			}
			n.Add(1)
		}
	})
	b.ReportMetric(float64(n.Load())/b.Elapsed().Seconds(), "events/s")
}
