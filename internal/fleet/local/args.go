package local

// argData is what a release's argument templates may refer to
// (fleet.RenderArgs renders them).
type argData struct {
	Listen    string // 127.0.0.1:<port>
	Port      int
	Pool      string
	Replica   int
	Instance  string // <pool>-r<revision>-<replica>
	Release   string
	DataDir   string // a directory of this replica under the state directory
	FlagsFile string
}
