// Command sesstub answers SES v2 SendEmail (POST /v2/email/outbound-emails) with a fresh
// MessageId, as fast as the standard library allows, so a sender benchmark measures the
// sender and never the endpoint. It accepts Simple and Raw content, refuses requests without a
// SigV4 Authorization header (400 BadRequestException, as SES answers a malformed call), and
// keeps three numbers for the benchmark: how many sends it accepted and when (monotonic
// nanoseconds) the first and the last arrived. GET /stats returns them as JSON; POST /reset
// zeroes them between rounds.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

var start = time.Now()

type counters struct {
	mu    sync.Mutex
	count int64
	first int64
	last  int64
}

func (c *counters) hit() int64 {
	now := time.Since(start).Nanoseconds()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.count == 0 {
		c.first = now
	}
	c.count++
	c.last = now
	return c.count
}

var ids atomic.Uint64

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	c := &counters{}
	prefix := strconv.FormatInt(time.Now().UnixNano(), 36)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v2/email/outbound-emails", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("Authorization") == "" ||
			!(bytes.Contains(body, []byte(`"Raw"`)) || bytes.Contains(body, []byte(`"Simple"`))) {
			w.Header().Set("x-amzn-ErrorType", "BadRequestException")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"message":"expected a signed SendEmail with Raw or Simple content"}`))
			return
		}
		c.hit()
		_, _ = fmt.Fprintf(w, `{"MessageId":"%s-%016x"}`, prefix, ids.Add(1))
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		out := map[string]int64{"count": c.count, "first_ns": c.first, "last_ns": c.last}
		c.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.count, c.first, c.last = 0, 0, 0
		c.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	// The benchmark reads the chosen port from this first line.
	fmt.Printf("listening %s\n", ln.Addr().String())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.Serve(ln))
}
