package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"
)

// SlackConfig configures a Slack-compatible incoming webhook (Slack,
// Mattermost, Rocket.Chat accept the same payload).
type SlackConfig struct {
	Name string
	// URL is the incoming-webhook URL; it carries the token, so it is a
	// Secret and never appears in errors or logs.
	URL    Secret
	Retry  Retry
	Client *http.Client
}

// SlackPayload is the incoming-webhook body: text is the fallback shown
// in notifications, blocks the formatted message.
type SlackPayload struct {
	Text   string       `json:"text"`
	Blocks []SlackBlock `json:"blocks"`
}

// SlackBlock is one Block Kit block (header, section or context).
type SlackBlock struct {
	Type     string      `json:"type"`
	Text     *SlackText  `json:"text,omitempty"`
	Elements []SlackText `json:"elements,omitempty"`
}

// SlackText is a Block Kit text object.
type SlackText struct {
	Type string `json:"type"` // plain_text | mrkdwn
	Text string `json:"text"`
}

// Block Kit limits: header text 150 characters, section text 3000.
const (
	slackHeaderMax  = 150
	slackSectionMax = 3000
)

type slack struct {
	cfg SlackConfig
	p   poster
}

// NewSlack returns the Slack-compatible channel.
func NewSlack(cfg SlackConfig) (Channel, error) {
	if cfg.Name == "" || cfg.URL.Empty() {
		return nil, fmt.Errorf("%w: slack channel needs a name and a url", ErrConfig)
	}
	return &slack{cfg: cfg, p: poster{client: cfg.Client, retry: cfg.Retry}}, nil
}

func (s *slack) Name() string { return s.cfg.Name }
func (s *slack) Kind() string { return "slack" }

// SlackMessage builds the payload for a delivery.
func SlackMessage(d Delivery) SlackPayload {
	n := d.Notice
	p := SlackPayload{Text: n.Subject}
	p.Blocks = append(p.Blocks, SlackBlock{Type: "header", Text: &SlackText{Type: "plain_text", Text: truncate(n.Subject, slackHeaderMax)}})
	for _, chunk := range chunks(n.Body, slackSectionMax-8) {
		p.Blocks = append(p.Blocks, SlackBlock{Type: "section", Text: &SlackText{Type: "mrkdwn", Text: "```" + chunk + "```"}})
	}
	id := d.ID
	if len(id) > 16 {
		id = id[:16]
	}
	ctx := fmt.Sprintf("%s · phase %s (%s) · revision %d · delivery %s · %s", n.Incident, n.Phase, n.Phase.Name(), n.Revision, id, n.Digest)
	p.Blocks = append(p.Blocks, SlackBlock{Type: "context", Elements: []SlackText{{Type: "mrkdwn", Text: ctx}}})
	return p
}

func (s *slack) Deliver(ctx context.Context, d Delivery) (Receipt, error) {
	body, err := json.Marshal(SlackMessage(d))
	if err != nil {
		return Receipt{}, err
	}
	attempts, answer, err := s.p.post(ctx, string(s.cfg.URL.Reveal()), body, nil)
	if err != nil {
		return Receipt{Attempts: attempts}, fmt.Errorf("slack %s: %w", s.cfg.Name, err)
	}
	return Receipt{Attempts: attempts, Detail: snippet(answer)}, nil
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// chunks splits s at line ends into pieces of at most n runes (a line
// longer than n is cut).
func chunks(s string, n int) []string {
	var out []string
	var cur strings.Builder
	count := 0
	flush := func() {
		if cur.Len() > 0 {
			out = append(out, strings.TrimRight(cur.String(), "\n"))
			cur.Reset()
			count = 0
		}
	}
	for _, line := range strings.SplitAfter(s, "\n") {
		for utf8.RuneCountInString(line) > n {
			flush()
			r := []rune(line)
			out = append(out, string(r[:n]))
			line = string(r[n:])
		}
		if l := utf8.RuneCountInString(line); count+l > n {
			flush()
		}
		cur.WriteString(line)
		count += utf8.RuneCountInString(line)
	}
	flush()
	return out
}
