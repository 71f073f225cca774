package s3lock

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/countersign/countersign/internal/snapshot"
)

// Mode is an S3 Object Lock retention mode.
type Mode string

const (
	// Compliance retention cannot be removed or shortened by anyone,
	// the account root included, until it expires.
	Compliance Mode = "COMPLIANCE"
	// Governance retention can be removed by principals holding
	// s3:BypassGovernanceRetention who send the bypass header; without it
	// deletes are refused as under Compliance.
	Governance Mode = "GOVERNANCE"
)

// Defaults of Config.
const (
	DefaultEndpoint = "s3.amazonaws.com"
	// DefaultRetention keeps every object locked for 30 days.
	DefaultRetention = 30 * 24 * time.Hour
	// DefaultCanaryRetention outlasts the enforcement probe (milliseconds)
	// plus the largest clock skew SigV4 tolerates (15 minutes), so a
	// server never sees the canary's lock as already expired.
	DefaultCanaryRetention = 30 * time.Minute
	// DefaultPartSize is the multipart part size; objects up to this size
	// go up in one PUT.
	DefaultPartSize = 64 << 20
	// MinPartSize is S3's smallest part size (except the last part).
	MinPartSize = 5 << 20
	// maxPartSize and maxParts are S3's limits.
	maxPartSize = 5 << 30
	maxParts    = 10000
)

// Config configures a Store. Zero values take the documented defaults.
// Credentials are never part of a Config parsed from a URL: ParseURL
// refuses URLs that carry them.
type Config struct {
	// Endpoint is the S3 API's host[:port]; default DefaultEndpoint.
	Endpoint string
	// Region is the bucket's region; empty lets the client discover it.
	Region string
	// Insecure speaks plain HTTP instead of HTTPS. Requests stay SigV4
	// signed (the secret never crosses the wire), but the data does.
	Insecure bool
	// PathStyle forces path-style addressing (http://host/bucket/key);
	// otherwise the client picks (path style for IP endpoints).
	PathStyle bool
	// Bucket holds the objects; it must have Object Lock enabled.
	Bucket string
	// Prefix is prepended, with a slash, to every object name; empty
	// means the bucket's root. Same syntax as snapshot.CheckName.
	Prefix string
	// Mode is the retention mode of every object; default Compliance.
	Mode Mode
	// Retention is how long every object stays locked: each Put sets
	// retain-until = Now() + Retention. Default DefaultRetention.
	Retention time.Duration
	// LegalHold also places a legal hold on every object, which keeps it
	// beyond its retention until someone with s3:PutObjectLegalHold
	// removes the hold.
	LegalHold bool
	// AllowUnenforced lets New succeed, with a slog warning, when Check
	// proves that the server does not enforce Object Lock. Default false:
	// New fails with an *UnenforcedError.
	AllowUnenforced bool
	// CanaryRetention is the retention of Check's canary objects; default
	// DefaultCanaryRetention.
	CanaryRetention time.Duration
	// PartSize is the multipart part size, between MinPartSize and 5 GiB;
	// default DefaultPartSize. Objects are limited to 10,000 parts.
	PartSize int64
	// SpoolDir is where Put buffers an object to hash it before upload;
	// default os.TempDir(). It needs room for the largest object.
	SpoolDir string
	// Credentials sign requests; nil means EnvCredentials().
	Credentials *credentials.Credentials
	// Transport is the HTTP transport (custom CAs, proxies); nil means
	// minio-go's default.
	Transport http.RoundTripper
	// Logger receives warnings and probe results; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock retain-until dates are computed from; nil means
	// time.Now.
	Now func() time.Time
}

// LogValue describes the configuration without credentials.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("endpoint", c.Endpoint),
		slog.String("region", c.Region),
		slog.Bool("insecure", c.Insecure),
		slog.String("bucket", c.Bucket),
		slog.String("prefix", c.Prefix),
		slog.String("mode", string(c.Mode)),
		slog.Duration("retention", c.Retention),
		slog.Bool("legal_hold", c.LegalHold),
		slog.Bool("allow_unenforced", c.AllowUnenforced),
	)
}

// withDefaults fills zero fields and validates the result.
func (c Config) withDefaults() (Config, error) {
	if c.Endpoint == "" {
		c.Endpoint = DefaultEndpoint
	}
	if c.Mode == "" {
		c.Mode = Compliance
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.CanaryRetention == 0 {
		c.CanaryRetention = DefaultCanaryRetention
	}
	if c.PartSize == 0 {
		c.PartSize = DefaultPartSize
	}
	if c.SpoolDir == "" {
		c.SpoolDir = os.TempDir()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	switch {
	case c.Bucket == "":
		return c, errors.New("s3lock: no bucket")
	case c.Mode != Compliance && c.Mode != Governance:
		return c, fmt.Errorf("s3lock: mode %q: want %s or %s", c.Mode, Compliance, Governance)
	case c.Retention < time.Second:
		return c, fmt.Errorf("s3lock: retention %v: must be at least 1s", c.Retention)
	case c.CanaryRetention < time.Second:
		return c, fmt.Errorf("s3lock: canary retention %v: must be at least 1s", c.CanaryRetention)
	case c.PartSize < MinPartSize || c.PartSize > maxPartSize:
		return c, fmt.Errorf("s3lock: part size %d: must be between %d and %d", c.PartSize, MinPartSize, int64(maxPartSize))
	}
	if c.Prefix != "" {
		if err := snapshot.CheckName(c.Prefix); err != nil {
			return c, fmt.Errorf("s3lock: prefix: %w", err)
		}
	}
	return c, nil
}

// ParseURL parses a store URL:
//
//	s3://BUCKET[/PREFIX][?PARAMS]
//
// with PARAMS among endpoint=HOST[:PORT], region=REGION, insecure=1 (plain
// HTTP), path_style=1, mode=compliance|governance, retention=DURATION (Go
// syntax such as 720h, or whole days such as 30d), legal_hold=1 and
// allow_unenforced=1. Unknown parameters are errors. Credentials are not
// accepted in the URL; the returned Config has none, and New then takes
// them from EnvCredentials. Error messages never repeat the URL.
func ParseURL(rawURL string) (Config, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error repeats the URL; keep only what went wrong.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return Config{}, fmt.Errorf("s3lock: store URL: %w", err)
	}
	if u.Scheme != "s3" {
		return Config{}, fmt.Errorf("s3lock: store URL scheme %q: want s3", u.Scheme)
	}
	if u.User != nil {
		return Config{}, errors.New("s3lock: store URL must not carry credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or a shared credentials file")
	}
	if u.Host == "" {
		return Config{}, errors.New("s3lock: store URL has no bucket (s3://BUCKET/PREFIX)")
	}
	if u.Fragment != "" {
		return Config{}, errors.New("s3lock: store URL must not have a fragment")
	}
	c := Config{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/")}
	for name, vals := range u.Query() {
		if len(vals) != 1 {
			return Config{}, fmt.Errorf("s3lock: store URL parameter %q given %d times", name, len(vals))
		}
		v := vals[0]
		switch name {
		case "endpoint":
			if v == "" || strings.Contains(v, "/") {
				return Config{}, fmt.Errorf("s3lock: endpoint %q: want HOST[:PORT]", v)
			}
			c.Endpoint = v
		case "region":
			c.Region = v
		case "mode":
			c.Mode = Mode(strings.ToUpper(v))
			if c.Mode != Compliance && c.Mode != Governance {
				return Config{}, fmt.Errorf("s3lock: mode %q: want compliance or governance", v)
			}
		case "retention":
			if c.Retention, err = parseRetention(v); err != nil {
				return Config{}, err
			}
		case "insecure", "path_style", "legal_hold", "allow_unenforced":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Config{}, fmt.Errorf("s3lock: parameter %s=%q: want 1 or 0", name, v)
			}
			switch name {
			case "insecure":
				c.Insecure = b
			case "path_style":
				c.PathStyle = b
			case "legal_hold":
				c.LegalHold = b
			case "allow_unenforced":
				c.AllowUnenforced = b
			}
		default:
			// The name only: a mistyped secret must not end up in a log.
			return Config{}, fmt.Errorf("s3lock: unknown store URL parameter %q", name)
		}
	}
	return c.withDefaults()
}

// parseRetention accepts a Go duration or a whole number of days ("30d").
func parseRetention(v string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("s3lock: retention %q: want a positive number of days or a duration such as 720h", v)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("s3lock: retention %q: want a positive duration such as 720h or 30d", v)
	}
	return d, nil
}

// EnvCredentials returns the credentials of the process environment:
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) when
// set, otherwise the shared credentials file (AWS_SHARED_CREDENTIALS_FILE,
// default ~/.aws/credentials, profile AWS_PROFILE, default "default").
func EnvCredentials() *credentials.Credentials {
	return credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{},
		&credentials.FileAWSCredentials{},
	})
}

// checkCredentials refuses anonymous access: a bucket whose lock can be
// written anonymously protects nothing, and a missing variable should be
// reported as such rather than as an AccessDenied from the server.
func checkCredentials(creds *credentials.Credentials) error {
	v, err := creds.Get()
	if err != nil {
		return fmt.Errorf("s3lock: credentials: %w", err)
	}
	if v.SignerType.IsAnonymous() || v.AccessKeyID == "" || v.SecretAccessKey == "" {
		return errors.New("s3lock: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_SHARED_CREDENTIALS_FILE (profile AWS_PROFILE)")
	}
	return nil
}

// isLoopback reports whether an endpoint's host is a loopback address or
// localhost, where plain HTTP does not leave the machine.
func isLoopback(endpoint string) bool {
	host := endpoint
	if h, _, err := net.SplitHostPort(endpoint); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
