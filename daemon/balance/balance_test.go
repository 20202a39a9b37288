package balance

import (
	"fmt"
	"math"
	"testing"

	"sluice/daemon/server"
)

func servers(weights ...int) []*server.Server {
	var out []*server.Server
	for i, w := range weights {
		out = append(out, server.New("b", fmt.Sprintf("s%d", i), "127.0.0.1:1", w, 0))
	}
	return out
}

func counts(b Balancer, n int, key func(i int) uint64) map[string]int {
	got := map[string]int{}
	for i := range n {
		s := b.Pick(key(i), nil)
		if s == nil {
			got["<nil>"]++
			continue
		}
		got[s.Name]++
	}
	return got
}

func seq(i int) uint64 { return Hash([]byte(fmt.Sprintf("10.0.%d.%d", i/256, i%256))) }

// TestDistributionFollowsWeights checks each algorithm's share per server
// against its weight, exactly for round robin and within a tolerance for
// the hashing and random ones.
func TestDistributionFollowsWeights(t *testing.T) {
	cases := []struct {
		algo, hashType string
		tolerance      float64 // allowed relative error per server
	}{
		{"roundrobin", "", 0},
		{"static-rr", "", 0},
		{"source", "map-based", 0.05},
		{"source", "consistent", 0.15},
		{"random", "", 0.05},
	}
	weights := []int{5, 3, 1, 1}
	const n = 100000
	for _, tc := range cases {
		t.Run(tc.algo+"/"+tc.hashType, func(t *testing.T) {
			srv := servers(weights...)
			b, err := New(tc.algo, tc.hashType, srv)
			if err != nil {
				t.Fatal(err)
			}
			got := counts(b, n, seq)
			for i, w := range weights {
				want := float64(n) * float64(w) / 10
				if diff := math.Abs(float64(got[srv[i].Name]) - want); diff > tc.tolerance*want {
					t.Errorf("%s got %d picks, want %.0f (±%.0f%%); all: %v", srv[i].Name, got[srv[i].Name], want, tc.tolerance*100, got)
				}
			}
		})
	}
}

func TestRoundRobinIsSmooth(t *testing.T) {
	srv := servers(5, 1, 1)
	b := NewRoundRobin(srv)
	var got string
	for range 7 {
		got += b.Pick(0, nil).Name[1:]
	}
	if got != "0010200" { // nginx's documented a a b a c a a
		t.Errorf("smooth weighted sequence = %s, want 0010200", got)
	}
}

func TestSkipsIneligible(t *testing.T) {
	for _, algo := range []string{"roundrobin", "leastconn", "first", "source", "random"} {
		t.Run(algo, func(t *testing.T) {
			srv := servers(1, 1, 1)
			srv[0].SetUp(false)
			srv[1].SetMaint(true)
			b, _ := New(algo, "", srv)
			for i := range 50 {
				if s := b.Pick(seq(i), nil); s != srv[2] {
					t.Fatalf("pick %d = %v, want s2 (the only eligible)", i, s)
				}
			}
			if s := b.Pick(0, srv[2]); s != nil {
				t.Fatalf("with the only eligible server skipped, got %s", s.Name)
			}
			srv[2].SetWeight(0)
			if s := b.Pick(0, nil); s != nil {
				t.Fatalf("weight 0 server chosen")
			}
		})
	}
}

func TestLeastConnPrefersIdle(t *testing.T) {
	srv := servers(1, 1, 2)
	b := &LeastConn{servers: srv}
	// Hold every picked connection open: the loads must stay balanced by weight.
	for range 40 {
		s := b.Pick(0, nil)
		s.Acquire()
	}
	if l0, l1, l2 := srv[0].Load(), srv[1].Load(), srv[2].Load(); l0 != 10 || l1 != 10 || l2 != 20 {
		t.Errorf("loads = %d/%d/%d, want 10/10/20", l0, l1, l2)
	}
}

func TestFirstFillsInOrder(t *testing.T) {
	srv := []*server.Server{
		server.New("b", "a", "x:1", 1, 2),
		server.New("b", "b", "x:1", 1, 2),
	}
	f := &First{servers: srv}
	var got string
	for range 5 {
		s := f.Pick(0, nil)
		if s == nil {
			got += "-"
			continue
		}
		s.Acquire()
		got += s.Name
	}
	if got != "aabb-" {
		t.Errorf("first = %s, want aabb-", got)
	}
}

func TestConsistentMovesOnlyTheLostServersKeys(t *testing.T) {
	srv := servers(1, 1, 1, 1)
	c := NewConsistent(srv)
	before := make([]*server.Server, 2000)
	for i := range before {
		before[i] = c.Pick(seq(i), nil)
	}
	srv[1].SetUp(false)
	for i := range before {
		after := c.Pick(seq(i), nil)
		if before[i] != srv[1] && after != before[i] {
			t.Fatalf("key %d moved from %s to %s though its server stayed up", i, before[i].Name, after.Name)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	for _, algo := range []string{"roundrobin", "leastconn", "source", "random"} {
		b.Run(algo, func(b *testing.B) {
			bal, _ := New(algo, "consistent", servers(1, 2, 3, 4, 5, 6, 7, 8))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				k := uint64(0)
				for pb.Next() {
					k += 0x9e3779b97f4a7c15
					bal.Pick(k, nil)
				}
			})
		})
	}
}
