package drill

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/countersign/countersign/internal/control"
	"github.com/countersign/countersign/internal/evidence"
	"github.com/countersign/countersign/internal/notify"
	"github.com/countersign/countersign/internal/playbook"
	"github.com/countersign/countersign/internal/reconcile"
)

// Reconciliation is the reconcile step's verdict counts in the report.
type Reconciliation struct {
	Replayed      int  `json:"replayed"`
	Valid         int  `json:"valid"`
	Invalid       int  `json:"invalid"`
	MetadataDrift int  `json:"metadata_drift"`
	Unverifiable  int  `json:"unverifiable"`
	ManualReview  int  `json:"manual_review"`
	LogConsistent bool `json:"log_consistent"`
	// Report is the reconciliation report (JSON) in the world's data dir.
	Report string `json:"report"`
}

// Notice is one delivery of one incident notice.
type Notice struct {
	Phase     string `json:"phase"`
	Tenant    string `json:"tenant,omitempty"`
	Channel   string `json:"channel"`
	File      string `json:"file,omitempty"`
	Delivered bool   `json:"delivered"`
}

// receiver is the drill's notice webhook on loopback: it accepts a
// delivery only if its Standard Webhooks HMAC verifies.
type receiver struct {
	key    []byte
	secret notify.Secret
	srv    *http.Server
	url    string

	mu       sync.Mutex
	verified map[string]bool // delivery id → HMAC verified; r.mu must be held
	rejected int
}

func startReceiver() (*receiver, error) {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return nil, err
	}
	r := &receiver{key: k[:], secret: notify.NewSecret([]byte("whsec_"+base64.StdEncoding.EncodeToString(k[:])), "drill"),
		verified: map[string]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r.url = "http://" + ln.Addr().String() + "/notices"
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve)}
	go r.srv.Serve(ln)
	return r, nil
}

func (r *receiver) serve(rw http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	id := req.Header.Get(notify.HeaderWebhookID)
	ts, err := strconv.ParseInt(req.Header.Get(notify.HeaderWebhookTimestamp), 10, 64)
	want := notify.SignWebhook(r.key, id, ts, body)
	ok := err == nil && id != ""
	if ok {
		ok = false
		for _, sig := range strings.Fields(req.Header.Get(notify.HeaderWebhookSignature)) {
			if hmac.Equal([]byte(sig), []byte(want)) {
				ok = true
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !ok {
		r.rejected++
		http.Error(rw, "signature does not verify", http.StatusUnauthorized)
		return
	}
	r.verified[id] = true
	rw.WriteHeader(http.StatusNoContent)
}

func (r *receiver) got(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.verified[id]
}

func (r *receiver) close() { r.srv.Close() }

// gradeClose fills the report's reconciliation, notices, evidence and
// postmortem from the run and the world's data directory, copies notices
// and the postmortem under the drill's out dir, and verifies the bundle.
func gradeClose(ctx context.Context, rep *Report, dataDir, outDir string, inc control.Incident, final playbook.Status, rcv *receiver,
	sc Scenario, fail func(bool, string, ...any)) {
	if inc.ID != "" {
		recs, err := control.Notices(dataDir, inc.ID)
		fail(err != nil, "notices: %v", err)
		phaseA := false
		for _, r := range recs {
			for _, d := range r.Deliveries {
				n := Notice{Phase: string(r.Notice.Phase), Tenant: r.Notice.Tenant, Channel: d.Channel, Delivered: d.Result != "failed"}
				if d.Kind == "webhook" {
					n.Delivered = n.Delivered && rcv != nil && rcv.got(d.DeliveryID)
				}
				if d.File != "" {
					name := string(r.Notice.Phase)
					if r.Notice.Tenant != "" {
						name += "-" + r.Notice.Tenant
					}
					n.File = filepath.Join(outDir, "notices", name+".json")
					if err := copyFile(d.File, n.File); err != nil {
						fail(true, "copy notice %s: %v", d.File, err)
						n.File = d.File
					}
				}
				fail(!n.Delivered, "notice phase %s (%s) via %s not delivered: %s", n.Phase, n.Tenant, n.Channel, d.Error)
				phaseA = phaseA || (n.Phase == string(notify.PhaseInternal) && n.Delivered)
				rep.Notices = append(rep.Notices, n)
			}
		}
		if st := final.Step("open-incident"); st != nil && st.State == playbook.StepSucceeded {
			fail(!phaseA, "open-incident succeeded without a delivered phase A notice")
		}
	}
	if st := final.Step("reconcile"); st != nil && st.State == playbook.StepSucceeded {
		path, _ := st.Outputs["report"].(string)
		var rr reconcile.Report
		b, err := os.ReadFile(path)
		if err == nil {
			err = json.Unmarshal(b, &rr)
		}
		if err != nil {
			fail(true, "reconciliation report %q: %v", path, err)
		} else {
			s := rr.Summary()
			rep.Reconciliation = &Reconciliation{Replayed: s.Replayed, Valid: s.Classes[string(reconcile.ClassValid)],
				Invalid: s.Classes[string(reconcile.ClassInvalid)], MetadataDrift: s.Classes[string(reconcile.ClassDrift)],
				Unverifiable: s.Classes[string(reconcile.ClassUnverifiable)], ManualReview: s.ManualReview, LogConsistent: s.LogConsistent, Report: path}
		}
	}
	if sc.Expect == playbook.RunSucceeded {
		r := rep.Reconciliation
		fail(r == nil, "no reconciliation report")
		if r != nil {
			switch sc.Fault {
			case "invalid-signatures":
				fail(r.Invalid == 0, "reconciliation found no invalid signature in an invalid-signatures drill")
			case "metadata-drift":
				fail(r.MetadataDrift == 0, "reconciliation found no metadata-drift signature in a metadata-drift drill")
			}
			fail(!r.LogConsistent, "reconciliation did not prove the audit log consistent")
		}
	}
	st := final.Step("close")
	if st == nil || st.State != playbook.StepSucceeded {
		fail(sc.Expect == playbook.RunSucceeded, "close step did not succeed: no evidence bundle")
		return
	}
	rep.EvidenceBundle, _ = st.Outputs["bundle"].(string)
	pub, err := control.LeadPublicKey(dataDir)
	if err == nil {
		var f *os.File
		if f, err = os.Open(rep.EvidenceBundle); err == nil {
			_, err = evidence.Verify(ctx, f, pub)
			f.Close()
		}
	}
	rep.EvidenceVerified = err == nil
	fail(err != nil, "evidence bundle %s does not verify: %v", rep.EvidenceBundle, err)
	if pm, _ := st.Outputs["postmortem"].(string); pm != "" {
		rep.Postmortem = filepath.Join(outDir, "postmortem.md")
		if err := copyFile(pm, rep.Postmortem); err != nil {
			fail(true, "copy postmortem: %v", err)
			rep.Postmortem = pm
		}
	}
	fail(rep.Postmortem == "", "close wrote no postmortem")
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		return fmt.Errorf("drill: %w", err)
	}
	return nil
}
