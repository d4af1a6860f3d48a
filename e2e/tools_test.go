package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// toolsDir is where `make tools` installs registry and crane.
const toolsDir = "/root/.cache/docxy-tools/bin"

// lookTool finds a binary on PATH or in toolsDir.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	p := filepath.Join(toolsDir, name)
	if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
		return p, nil
	}
	return "", fmt.Errorf("%s not found on PATH or in %s: run `make tools`", name, toolsDir)
}

// needTool returns the path of a required binary. A missing tool fails the test; the whole
// package is skipped under -short.
func needTool(t *testing.T, name string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: end-to-end tests skipped")
	}
	p, err := lookTool(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
