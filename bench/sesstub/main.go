// Command sesstub answers SES v2 SendEmail (POST /v2/email/outbound-emails) with a fresh
// MessageId, as fast as the standard library allows, so a sender benchmark measures the
// sender and never the endpoint. It also answers CreateEmailTemplate (POST
// /v2/email/templates; AlreadyExistsException for a name it has) and SendBulkEmail (POST
// /v2/email/outbound-bulk-emails: one SUCCESS result with a MessageId per entry, 1-50
// entries, TEMPLATE_NOT_FOUND for a template it was never given); a bulk entry counts as one
// send. It accepts Simple and Raw content, refuses requests without a
// SigV4 Authorization header (400 BadRequestException, as SES answers a malformed call), and
// keeps five numbers for the benchmark: how many sends it accepted, in how many calls, the
// request body bytes of those calls (what each sender puts on the wire for its content), and
// when (monotonic nanoseconds) the first and the last arrived. GET /stats returns them as JSON;
// POST /reset zeroes them between rounds.
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
	calls int64
	bytes int64
	first int64
	last  int64
}

func (c *counters) hit(n, size int64) int64 {
	now := time.Since(start).Nanoseconds()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.count == 0 {
		c.first = now
	}
	c.count += n
	c.calls++
	c.bytes += size
	c.last = now
	return c.count
}

type bulkRequest struct {
	DefaultContent struct {
		Template struct {
			TemplateName string
		}
	}
	BulkEmailEntries []json.RawMessage
}

func refuse(w http.ResponseWriter, code, message string) {
	w.Header().Set("x-amzn-ErrorType", code)
	w.WriteHeader(http.StatusBadRequest)
	_, _ = fmt.Fprintf(w, `{"message":%q}`, message)
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
		c.hit(1, int64(len(body)))
		_, _ = fmt.Fprintf(w, `{"MessageId":"%s-%016x"}`, prefix, ids.Add(1))
	})
	var templates sync.Map
	mux.HandleFunc("POST /v2/email/templates", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ TemplateName string }
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("Authorization") == "" || json.NewDecoder(r.Body).Decode(&req) != nil || req.TemplateName == "" {
			refuse(w, "BadRequestException", "expected a signed CreateEmailTemplate with a TemplateName")
			return
		}
		if _, had := templates.LoadOrStore(req.TemplateName, true); had {
			refuse(w, "AlreadyExistsException", "a template of that name exists")
			return
		}
		_, _ = w.Write([]byte(`{}`))
	})
	mux.HandleFunc("POST /v2/email/outbound-bulk-emails", func(w http.ResponseWriter, r *http.Request) {
		var req bulkRequest
		w.Header().Set("Content-Type", "application/json")
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		if r.Header.Get("Authorization") == "" || json.Unmarshal(body, &req) != nil ||
			len(req.BulkEmailEntries) < 1 || len(req.BulkEmailEntries) > 50 {
			refuse(w, "BadRequestException", "expected a signed SendBulkEmail with 1 to 50 entries")
			return
		}
		_, known := templates.Load(req.DefaultContent.Template.TemplateName)
		var out bytes.Buffer
		out.WriteString(`{"BulkEmailEntryResults":[`)
		for i := range req.BulkEmailEntries {
			if i > 0 {
				out.WriteByte(',')
			}
			if known {
				fmt.Fprintf(&out, `{"Status":"SUCCESS","MessageId":"%s-%016x"}`, prefix, ids.Add(1))
			} else {
				out.WriteString(`{"Status":"TEMPLATE_NOT_FOUND","Error":"no such template"}`)
			}
		}
		out.WriteString(`]}`)
		if known {
			c.hit(int64(len(req.BulkEmailEntries)), int64(len(body)))
		}
		_, _ = w.Write(out.Bytes())
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		out := map[string]int64{
			"count": c.count, "calls": c.calls, "bytes": c.bytes, "first_ns": c.first, "last_ns": c.last,
		}
		c.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.count, c.calls, c.bytes, c.first, c.last = 0, 0, 0, 0, 0
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
