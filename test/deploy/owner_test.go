//go:build deploy

package deploy

import (
	"os"
	"syscall"
)

func ownerOf(fi os.FileInfo) (uid, gid uint32) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid, st.Gid
	}
	return 0, 0
}
