// Package proc keeps the background processes of one sandbox: it starts
// them through a runtime's StartFunc, reads their output at full speed
// into a ring per stream (the newest ProcessSpec.Retain bytes, with the
// first ProcessSpec.Head bytes and a SHA-256 of everything kept apart),
// feeds their stdin from a bounded queue, and serves reads and followers
// from any retained offset. A follower that falls behind the ring is told
// how many bytes it missed (Chunk.Dropped) and goes on from the oldest
// retained one: no reader ever slows a process down, and what the table
// holds is bounded by the limits whatever clients do.
//
// The agent in each Docker sandbox keeps one Table (so processes outlive
// the server), and the server keeps one per Deno sandbox.
package proc
