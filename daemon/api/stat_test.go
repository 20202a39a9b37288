package api

import (
	"os"
	"strings"
	"testing"
)

// TestHeaderMatchesHAProxy26 compares the CSV header with the one HAProxy
// 2.6.12 (Debian 12) prints, kept in testdata.
func TestHeaderMatchesHAProxy26(t *testing.T) {
	b, err := os.ReadFile("testdata/haproxy-2.6-show-stat-header.txt")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(string(b)), "# "), ",")
	if got := strings.Join(statFields, ","); got != want {
		t.Errorf("header differs from HAProxy 2.6's:\n got %s\nwant %s", got, want)
	}
}
