package notify

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// mailbox is an in-process SMTP server (emersion/go-smtp) that requires
// AUTH PLAIN and can be told to fail.
type mailbox struct {
	mu        sync.Mutex
	messages  []received
	tempFails int    // answer DATA with 451 this many times
	rejectTo  string // answer RCPT TO this address with 550
	logins    int
}

type received struct {
	from string
	to   []string
	data []byte
}

func startMailbox(t *testing.T, mb *mailbox) (host string, port int) {
	t.Helper()
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &mailSession{mb: mb}, nil }))
	s.Domain = "localhost"
	s.AllowInsecureAuth = true
	s.ReadTimeout, s.WriteTimeout = 10*time.Second, 10*time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	a := ln.Addr().(*net.TCPAddr)
	return a.IP.String(), a.Port
}

type mailSession struct {
	mb     *mailbox
	authed bool
	cur    received
}

func (s *mailSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *mailSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if user != "notify" || pass != "s3cret-pass" {
			return smtp.ErrAuthFailed
		}
		s.authed = true
		s.mb.mu.Lock()
		s.mb.logins++
		s.mb.mu.Unlock()
		return nil
	}), nil
}

func (s *mailSession) Mail(from string, _ *smtp.MailOptions) error {
	if !s.authed {
		return smtp.ErrAuthRequired
	}
	s.cur = received{from: from}
	return nil
}

func (s *mailSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if to == s.mb.rejectTo {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	s.cur.to = append(s.cur.to, to)
	return nil
}

func (s *mailSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.mb.mu.Lock()
	defer s.mb.mu.Unlock()
	if s.mb.tempFails > 0 {
		s.mb.tempFails--
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}
	s.cur.data = b
	s.mb.messages = append(s.mb.messages, s.cur)
	return nil
}

func (s *mailSession) Reset()        { s.cur = received{} }
func (s *mailSession) Logout() error { return nil }

func TestSMTP(t *testing.T) {
	tests := []struct {
		name       string
		mb         *mailbox
		phase      Phase
		tenant     string
		wantTo     []string
		wantErr    bool
		wantSleeps int
	}{
		{"internal notice", &mailbox{}, PhaseInternal, "", []string{"oncall@countersign.example"}, false, 0},
		{"tenant notice goes to that tenant", &mailbox{}, PhaseCustomer, "acme", []string{"security@acme.example", "legal@acme.example"}, false, 0},
		{"temporary failure is retried", &mailbox{tempFails: 2}, PhaseInternal, "", []string{"oncall@countersign.example"}, false, 2},
		{"rejected recipient is permanent", &mailbox{rejectTo: "oncall@countersign.example"}, PhaseInternal, "", nil, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host, port := startMailbox(t, tt.mb)
			sl := &sleeps{}
			ch, err := NewSMTP(SMTPConfig{Name: "mail", Host: host, Port: port, TLS: SMTPTLSNone, Username: "notify",
				Password: NewSecret([]byte("s3cret-pass"), "env:SMTP_PASSWORD"), From: "incidents@countersign.example",
				To:       []string{"oncall@countersign.example"},
				TenantTo: map[string][]string{"acme": {"security@acme.example", "legal@acme.example"}},
				Timeout:  5 * time.Second, Retry: Retry{Sleep: sl.sleep}})
			if err != nil {
				t.Fatal(err)
			}
			n := testNotice(t, tt.phase, tt.tenant)
			d := delivery(n, "mail")
			_, err = ch.Deliver(context.Background(), d)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Deliver = %v, wantErr %v", err, tt.wantErr)
			}
			if len(sl.got()) != tt.wantSleeps {
				t.Errorf("sleeps %v, want %d", sl.got(), tt.wantSleeps)
			}
			if tt.wantErr {
				var pe *PermanentError
				if !errors.As(err, &pe) {
					t.Errorf("want a permanent error, got %v", err)
				}
				if strings.Contains(err.Error(), "s3cret-pass") {
					t.Errorf("error reveals the password: %v", err)
				}
				return
			}
			tt.mb.mu.Lock()
			defer tt.mb.mu.Unlock()
			if len(tt.mb.messages) != 1 {
				t.Fatalf("%d messages delivered, want 1", len(tt.mb.messages))
			}
			got := tt.mb.messages[0]
			if got.from != "incidents@countersign.example" || strings.Join(got.to, ",") != strings.Join(tt.wantTo, ",") {
				t.Errorf("envelope from %s to %v, want to %v", got.from, got.to, tt.wantTo)
			}
			m, err := mail.ReadMessage(strings.NewReader(string(got.data)))
			if err != nil {
				t.Fatal(err)
			}
			dec := new(mimeDecoder)
			if subj := dec.header(t, m.Header.Get("Subject")); subj != n.Subject {
				t.Errorf("Subject %q, want %q", subj, n.Subject)
			}
			if id := m.Header.Get("Message-Id"); id != "<"+d.ID+"@countersign.example>" {
				t.Errorf("Message-ID %q", id)
			}
			if m.Header.Get("X-Countersign-Digest") != n.Digest || m.Header.Get("X-Countersign-Delivery") != d.ID {
				t.Errorf("headers %v", m.Header)
			}
			body := dec.body(t, m)
			if !strings.Contains(body, strings.SplitN(n.Body, "\n", 2)[0]) {
				t.Errorf("body %q lacks the notice", body)
			}
		})
	}
}

// A tenant with no recipients is not taken by the SMTP channel.
func TestSMTPAcceptsOnlyTenantsWithRecipients(t *testing.T) {
	ch, err := NewSMTP(SMTPConfig{Name: "mail", Host: "127.0.0.1", From: "a@b.example",
		TenantTo: map[string][]string{"acme": {"x@acme.example"}}})
	if err != nil {
		t.Fatal(err)
	}
	a := ch.(accepter)
	if !a.Accepts(Notice{Tenant: "acme"}) || a.Accepts(Notice{Tenant: "globex"}) || a.Accepts(Notice{}) {
		t.Error("Accepts does not follow the recipients")
	}
}

type mimeDecoder struct{ mime.WordDecoder }

func (d *mimeDecoder) header(t *testing.T, v string) string {
	t.Helper()
	s, err := d.DecodeHeader(v)
	if err != nil {
		t.Fatalf("header %q: %v", v, err)
	}
	return s
}

func (d *mimeDecoder) body(t *testing.T, m *mail.Message) string {
	t.Helper()
	var r io.Reader = m.Body
	switch strings.ToLower(m.Header.Get("Content-Transfer-Encoding")) {
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, r)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
