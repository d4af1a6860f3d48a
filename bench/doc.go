// Package bench compares docxy's fasthttp handler stack with a net/http baseline doing the same
// work (package baseline), both in front of the same in-process upstream. It holds benchmarks
// only: see proxy_timing_test.go, loadtest.sh and RESULTS.md.
package bench
