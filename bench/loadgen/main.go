// Command loadgen is vatic's HTTP load generator for `make bench` (stdlib only).
//
// Two modes:
//
//   - closed loop (-c N, -rate 0): N workers each send a request, wait for the answer, send the next;
//   - open loop (-rate R): requests are scheduled at a constant arrival rate R/s whatever the server does, and
//     latency is measured from each request's scheduled send time, so queueing behind a slow server is counted
//     (coordinated omission is not hidden). -c caps the requests in flight (default 4096).
//
// Bodies come from -body or from -bodies (one body per line, used in turn). The result is one JSON object on
// stdout (or -out): count, errors, status codes, req/s, latency percentiles in ms and a CDF for plots.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type result struct {
	Mode        string         `json:"mode"`
	URL         string         `json:"url"`
	Concurrency int            `json:"concurrency"`
	TargetRate  float64        `json:"target_rate"`
	DurationS   float64        `json:"duration_s"`
	Count       int            `json:"count"`
	Errors      int            `json:"errors"`
	Statuses    map[string]int `json:"statuses"`
	FirstError  string         `json:"first_error,omitempty"`
	RPS         float64        `json:"rps"`
	MeanMS      float64        `json:"mean_ms"`
	P50MS       float64        `json:"p50_ms"`
	P90MS       float64        `json:"p90_ms"`
	P99MS       float64        `json:"p99_ms"`
	P999MS      float64        `json:"p999_ms"`
	MaxMS       float64        `json:"max_ms"`
	CDF         [][2]float64   `json:"cdf"`
}

type sample struct {
	latency time.Duration
	status  int
	err     error
}

type recorder struct {
	mu        sync.Mutex
	latencies []time.Duration
	statuses  map[string]int
	errors    int
	first     string
}

func (r *recorder) add(s sample, record bool) {
	if !record {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.err != nil {
		r.errors++
		r.statuses["error"]++
		if r.first == "" {
			r.first = s.err.Error()
		}
		return
	}
	r.statuses[fmt.Sprint(s.status)]++
	if s.status >= 400 {
		r.errors++
		if r.first == "" {
			r.first = fmt.Sprintf("HTTP %d", s.status)
		}
		return
	}
	r.latencies = append(r.latencies, s.latency)
}

func loadBodies(body, file string) ([][]byte, error) {
	if file == "" {
		return [][]byte{[]byte(body)}, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][]byte
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 1<<20), 16<<20)
	for scanner.Scan() {
		line := bytes.TrimSpace(scanner.Bytes())
		if len(line) > 0 {
			out = append(out, append([]byte(nil), line...))
		}
	}
	if err := scanner.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no bodies", file)
	}
	return out, nil
}

type headerList []string

func (h *headerList) String() string     { return strings.Join(*h, ",") }
func (h *headerList) Set(v string) error { *h = append(*h, v); return nil }

func percentile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return float64(sorted[i].Microseconds()) / 1000
}

func main() {
	url := flag.String("url", "", "target URL (required)")
	method := flag.String("method", "POST", "HTTP method")
	body := flag.String("body", "", "request body")
	bodies := flag.String("bodies", "", "file of request bodies, one per line, sent in turn")
	concurrency := flag.Int("c", 1, "closed loop: workers; open loop: most requests in flight (0 = 4096)")
	rate := flag.Float64("rate", 0, "open loop: requests per second (0 = closed loop)")
	duration := flag.Duration("d", 5*time.Second, "measured duration")
	warmup := flag.Duration("warmup", time.Second, "unmeasured warm-up before it")
	timeout := flag.Duration("timeout", 10*time.Second, "per-request timeout")
	out := flag.String("out", "", "write the JSON result here (default stdout)")
	var headers headerList
	flag.Var(&headers, "H", "extra header 'Name: value' (repeatable)")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "loadgen: -url is required")
		os.Exit(2)
	}
	payloads, err := loadBodies(*body, *bodies)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	inflight := *concurrency
	if *rate > 0 && inflight <= 1 {
		inflight = 4096
	}
	if inflight < 1 {
		fmt.Fprintln(os.Stderr, "loadgen: -c must be >= 1")
		os.Exit(2)
	}
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        inflight + 16,
		MaxIdleConnsPerHost: inflight + 16,
		DisableCompression:  true,
		IdleConnTimeout:     90 * time.Second,
	}
	client := &http.Client{Transport: transport, Timeout: *timeout}
	parsed := map[string]string{"Content-Type": "application/json"}
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			fmt.Fprintf(os.Stderr, "loadgen: header %q is not 'Name: value'\n", h)
			os.Exit(2)
		}
		parsed[strings.TrimSpace(name)] = strings.TrimSpace(value)
	}
	var counter atomic.Uint64
	send := func(scheduled time.Time) sample {
		payload := payloads[counter.Add(1)%uint64(len(payloads))]
		var reader io.Reader
		if *method != "GET" {
			reader = bytes.NewReader(payload)
		}
		req, err := http.NewRequest(*method, *url, reader)
		if err != nil {
			return sample{err: err}
		}
		for k, v := range parsed {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			return sample{err: err}
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return sample{latency: time.Since(scheduled), status: resp.StatusCode}
	}

	rec := &recorder{statuses: map[string]int{}}
	start := time.Now()
	measureFrom := start.Add(*warmup)
	end := measureFrom.Add(*duration)
	ctx, cancel := context.WithDeadline(context.Background(), end)
	defer cancel()
	var wg sync.WaitGroup
	mode := "closed"
	if *rate <= 0 {
		for w := 0; w < inflight; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					t := time.Now()
					s := send(t)
					rec.add(s, t.After(measureFrom) && time.Now().Before(end))
				}
			}()
		}
	} else {
		mode = "open"
		queue := make(chan time.Time, 1<<20)
		for w := 0; w < inflight; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for t := range queue {
					s := send(t)
					rec.add(s, !t.Before(measureFrom))
				}
			}()
		}
		interval := time.Duration(float64(time.Second) / *rate)
		next := start
		for next.Before(end) {
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
			// enqueue every request whose scheduled time has passed (catch up after a late wake-up)
			for now := time.Now(); !next.After(now) && next.Before(end); next = next.Add(interval) {
				queue <- next
			}
		}
		close(queue)
	}
	wg.Wait()
	sort.Slice(rec.latencies, func(i, j int) bool { return rec.latencies[i] < rec.latencies[j] })
	lat := rec.latencies
	res := result{
		Mode: mode, URL: *url, Concurrency: inflight, TargetRate: *rate, DurationS: duration.Seconds(),
		Count: len(lat), Errors: rec.errors, Statuses: rec.statuses, FirstError: rec.first,
	}
	if *rate <= 0 {
		res.Concurrency = *concurrency
	}
	res.RPS = float64(len(lat)) / duration.Seconds()
	if len(lat) > 0 {
		var total time.Duration
		for _, l := range lat {
			total += l
		}
		res.MeanMS = float64(total.Microseconds()) / 1000 / float64(len(lat))
		res.P50MS = percentile(lat, 0.50)
		res.P90MS = percentile(lat, 0.90)
		res.P99MS = percentile(lat, 0.99)
		res.P999MS = percentile(lat, 0.999)
		res.MaxMS = float64(lat[len(lat)-1].Microseconds()) / 1000
		for _, q := range []float64{0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999, 1} {
			res.CDF = append(res.CDF, [2]float64{percentile(lat, q), q})
		}
	}
	encoded, _ := json.MarshalIndent(res, "", "  ")
	if *out != "" {
		if err := os.WriteFile(*out, append(encoded, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(1)
		}
	} else {
		fmt.Println(string(encoded))
	}
}
