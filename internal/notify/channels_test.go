package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// sleeps is an injected Sleeper that records the waits instead of sleeping.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(_ context.Context, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.d = append(s.d, d)
	return nil
}

func (s *sleeps) got() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.d...)
}

// scripted answers each request with the next status of a script (the last
// one repeats) and keeps what it received.
type scripted struct {
	mu       sync.Mutex
	statuses []int
	headers  []http.Header
	bodies   [][]byte
	answer   func(w http.ResponseWriter, status int)
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	i := len(s.bodies)
	s.bodies = append(s.bodies, b)
	s.headers = append(s.headers, r.Header.Clone())
	st := s.statuses[min(i, len(s.statuses)-1)]
	s.mu.Unlock()
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "want POST application/json", http.StatusUnsupportedMediaType)
		return
	}
	s.answer(w, st)
}

func (s *scripted) requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.bodies)
}

func testNotice(t *testing.T, p Phase, tenant string) Notice {
	t.Helper()
	in := loadIncident(t)
	next := in.Incident.DetectedAt.Add(time.Hour)
	if p == PhaseRemediation {
		next = time.Time{}
	}
	n, err := defaults(t).Render(in, RenderOptions{Phase: p, Tenant: tenant, Revision: 1, NextUpdateAt: next})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func delivery(n Notice, channel string) Delivery {
	return Delivery{ID: n.DeliveryID(channel), Notice: n, SentAt: time.Date(2026, 3, 2, 9, 20, 0, 0, time.UTC)}
}

// decodeStrict decodes b into v, refusing fields v lacks.
func decodeStrict(t *testing.T, b []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("payload does not match the schema: %v\n%s", err, b)
	}
}

func TestWebhook(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	secret := NewSecret([]byte("whsec_"+base64.StdEncoding.EncodeToString(key)), "test")
	n := testNotice(t, PhaseCustomer, "acme")
	ts := time.Date(2026, 3, 2, 9, 20, 0, 0, time.UTC)
	tests := []struct {
		name       string
		statuses   []int
		retryAfter string
		wantErr    bool
		permanent  bool
		wantSleeps []time.Duration
	}{
		{"delivered", []int{204}, "", false, false, nil},
		{"retries 5xx with backoff", []int{503, 502, 200}, "", false, false, []time.Duration{time.Second, 2 * time.Second}},
		{"honours Retry-After", []int{429, 200}, "3", false, false, []time.Duration{3 * time.Second}},
		{"caps Retry-After at Max", []int{429, 200}, "3600", false, false, []time.Duration{4 * time.Second}},
		{"4xx is permanent", []int{400}, "", true, true, nil},
		{"gives up", []int{500}, "", true, false, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := &scripted{statuses: tt.statuses, answer: func(w http.ResponseWriter, st int) {
				if tt.retryAfter != "" && st == 429 {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.WriteHeader(st)
			}}
			hs := httptest.NewServer(srv)
			defer hs.Close()
			sl := &sleeps{}
			ch, err := NewWebhook(WebhookConfig{Name: "partners", URL: hs.URL, Secret: secret,
				Retry: Retry{Attempts: 5, Initial: time.Second, Max: 4 * time.Second, Sleep: sl.sleep}, Now: func() time.Time { return ts }})
			if err != nil {
				t.Fatal(err)
			}
			d := delivery(n, "partners")
			rc, err := ch.Deliver(context.Background(), d)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Deliver = %v, wantErr %v", err, tt.wantErr)
			}
			var pe *PermanentError
			if got := errors.As(err, &pe); got != tt.permanent {
				t.Errorf("permanent = %v, want %v (%v)", got, tt.permanent, err)
			}
			if err == nil && rc.Attempts != len(tt.statuses) {
				t.Errorf("attempts = %d, want %d", rc.Attempts, len(tt.statuses))
			}
			if got := sl.got(); !equalDurations(got, tt.wantSleeps) {
				t.Errorf("sleeps = %v, want %v", got, tt.wantSleeps)
			}
			// Every attempt carries the same delivery ID and a valid signature.
			for i := range srv.requests() {
				h, body := srv.headers[i], srv.bodies[i]
				if h.Get(HeaderWebhookID) != d.ID || h.Get("Idempotency-Key") != d.ID {
					t.Errorf("attempt %d: id %q, want %q", i+1, h.Get(HeaderWebhookID), d.ID)
				}
				if h.Get(HeaderWebhookTimestamp) != strconv.FormatInt(ts.Unix(), 10) {
					t.Errorf("timestamp %q", h.Get(HeaderWebhookTimestamp))
				}
				m := hmac.New(sha256.New, key)
				m.Write([]byte(d.ID + "." + h.Get(HeaderWebhookTimestamp) + "."))
				m.Write(body)
				want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
				if !hmac.Equal([]byte(h.Get(HeaderWebhookSignature)), []byte(want)) {
					t.Errorf("attempt %d: signature %q, want %q", i+1, h.Get(HeaderWebhookSignature), want)
				}
				var p WebhookPayload
				decodeStrict(t, body, &p)
				if p.Type != "countersign.notice" || p.DeliveryID != d.ID || p.Incident != "INC-7" || p.Phase != PhaseCustomer ||
					p.Tenant != "acme" || p.Digest != n.Digest || p.Body != n.Body || p.Subject != n.Subject || p.NextUpdateAt.IsZero() {
					t.Errorf("payload %+v does not carry the notice", p)
				}
			}
		})
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSlack(t *testing.T) {
	n := testNotice(t, PhaseInternal, "")
	for _, tt := range []struct {
		name     string
		statuses []int
		wantErr  bool
	}{
		{"delivered", []int{200}, false},
		{"rate limited then delivered", []int{429, 200}, false},
		{"no_service is permanent", []int{404}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := &scripted{statuses: tt.statuses, answer: func(w http.ResponseWriter, st int) {
				w.WriteHeader(st)
				switch st {
				case 200:
					io.WriteString(w, "ok")
				case 404:
					io.WriteString(w, "no_service")
				default:
					io.WriteString(w, "rate_limited")
				}
			}}
			hs := httptest.NewServer(srv)
			defer hs.Close()
			url := hs.URL + "/services/T000/B000/XXXXSECRETTOKEN"
			sl := &sleeps{}
			ch, err := NewSlack(SlackConfig{Name: "oncall", URL: NewSecret([]byte(url), "env:SLACK_URL"), Retry: Retry{Sleep: sl.sleep}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = ch.Deliver(context.Background(), delivery(n, "oncall"))
			if (err != nil) != tt.wantErr {
				t.Fatalf("Deliver = %v", err)
			}
			if err != nil && strings.Contains(err.Error(), "SECRETTOKEN") {
				t.Errorf("error reveals the webhook URL: %v", err)
			}
			var p SlackPayload
			decodeStrict(t, srv.bodies[0], &p)
			if p.Text != n.Subject || len(p.Blocks) < 3 || p.Blocks[0].Type != "header" || p.Blocks[1].Type != "section" ||
				p.Blocks[len(p.Blocks)-1].Type != "context" {
				t.Fatalf("payload %+v", p)
			}
			var text strings.Builder
			for _, b := range p.Blocks[1 : len(p.Blocks)-1] {
				if len([]rune(b.Text.Text)) > slackSectionMax || b.Text.Type != "mrkdwn" {
					t.Errorf("section %q breaks Block Kit limits", b.Text.Text)
				}
				text.WriteString(strings.Trim(b.Text.Text, "`") + "\n")
			}
			if !strings.Contains(text.String(), "Containment actions taken") {
				t.Errorf("body not in sections: %q", text.String())
			}
		})
	}
}

func TestSlackLongBodyIsChunked(t *testing.T) {
	body := strings.Repeat("a line of the timeline that goes on for a while\n", 200)
	got := chunks(body, slackSectionMax-8)
	if len(got) < 3 {
		t.Fatalf("%d chunks", len(got))
	}
	if strings.Join(got, "\n")+"\n" != body {
		t.Error("chunks lose text")
	}
}

func TestPagerDuty(t *testing.T) {
	n := testNotice(t, PhaseInternal, "")
	for _, tt := range []struct {
		name     string
		statuses []int
		wantErr  bool
	}{
		{"accepted", []int{202}, false},
		{"throttled then accepted", []int{429, 500, 202}, false},
		{"invalid event", []int{400}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var events []PagerDutyEvent
			srv := &scripted{statuses: tt.statuses}
			srv.answer = func(w http.ResponseWriter, st int) {
				var ev PagerDutyEvent
				srv.mu.Lock()
				decodeStrict(t, srv.bodies[len(srv.bodies)-1], &ev)
				srv.mu.Unlock()
				events = append(events, ev)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(st)
				if st == 202 {
					json.NewEncoder(w).Encode(map[string]string{"status": "success", "message": "Event processed", "dedup_key": ev.DedupKey})
				} else {
					json.NewEncoder(w).Encode(map[string]any{"status": "invalid event", "message": "Event object is invalid", "errors": []string{"x"}})
				}
			}
			hs := httptest.NewServer(srv)
			defer hs.Close()
			sl := &sleeps{}
			ch, err := NewPagerDuty(PagerDutyConfig{Name: "pager", URL: hs.URL + "/v2/enqueue",
				RoutingKey: NewSecret([]byte("R0UT1NGKEY0123456789012345678901"), "env:PD"), Retry: Retry{Sleep: sl.sleep}})
			if err != nil {
				t.Fatal(err)
			}
			d := delivery(n, "pager")
			rc, err := ch.Deliver(context.Background(), d)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Deliver = %v", err)
			}
			if err == nil && (rc.Attempts != len(tt.statuses) || len(sl.got()) != len(tt.statuses)-1) {
				t.Errorf("attempts %d, sleeps %v", rc.Attempts, sl.got())
			}
			ev := events[0]
			if ev.RoutingKey != "R0UT1NGKEY0123456789012345678901" || ev.EventAction != "trigger" || ev.DedupKey != "countersign/INC-7" {
				t.Errorf("event %+v", ev)
			}
			p := ev.Payload
			if p.Summary != n.Subject || p.Source == "" || p.Severity != "critical" || p.Class != "signature-corruption" ||
				p.CustomDetails["delivery_id"] != d.ID || p.CustomDetails["digest"] != n.Digest {
				t.Errorf("payload %+v", p)
			}
			if _, err := time.Parse(time.RFC3339, p.Timestamp); err != nil {
				t.Errorf("timestamp %q: %v", p.Timestamp, err)
			}
		})
	}
}

func TestRetryStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := Retry{Attempts: 10, Sleep: func(ctx context.Context, d time.Duration) error { cancel(); return ctx.Err() }}
	n, err := r.do(ctx, func(int) error { return &retryable{err: errors.New("busy")} })
	if n != 1 || !errors.Is(err, context.Canceled) {
		t.Fatalf("do = %d, %v", n, err)
	}
}
