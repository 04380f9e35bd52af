package proc

import (
	"os"

	"github.com/creack/pty"

	"github.com/codebeaker/codebeaker/sandbox"
)

// OpenPTY opens a terminal of the given size: its master side, for the
// server or agent, and its slave side, the process's stdin, stdout and
// stderr.
func OpenPTY(size sandbox.WinSize) (master, slave *os.File, err error) {
	master, slave, err = pty.Open()
	if err != nil {
		return nil, nil, err
	}
	if err := SetSize(master, size); err != nil {
		master.Close()
		slave.Close()
		return nil, nil, err
	}
	return master, slave, nil
}

// SetSize sets a terminal's size; its foreground process group gets
// SIGWINCH.
func SetSize(master *os.File, size sandbox.WinSize) error {
	return pty.Setsize(master, &pty.Winsize{Cols: size.Cols, Rows: size.Rows})
}
