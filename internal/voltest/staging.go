package voltest

import "github.com/mpaged/mpaged/fs/ext"

// StagedContent is the bytes of the one file StagingLinks puts in the
// staging directory.
const StagedContent = "half-written staged bytes"

// StagingLinks is a volume whose staging directory (ext.StagingDir) holds
// one staged file, "staged", with symbolic links into it at several
// depths, absolute and relative, a chain, links to the root (an ancestor
// of it), and ordinary links beside them ("/ok" -> "d/f", "/okdir" ->
// "/d"). Servers' tests reach the staging directory through each.
func StagingLinks() Options {
	s := ext.StagingDir
	return Options{
		Tree: map[string]string{s[1:] + "/staged": StagedContent, "d/f": "normal", "d/e/.keep": ""},
		Links: map[string]string{
			"l":       s[1:],                // relative, the directory
			"la":      s,                    // absolute, the directory
			"chain":   "l",                  // a link to such a link
			"d/l":     ".." + s + "/staged", // relative, a file in it
			"d/e/l":   "../.." + s,          // two levels up
			"d/e/abs": s + "/staged",        // absolute, a file in it
			"up":      "/",                  // the root
			"d/up":    "..",                 // the root, relatively
			"ok":      "d/f",
			"okdir":   "/d",
		},
	}
}
