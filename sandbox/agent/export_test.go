package agent

import "syscall"

func sandboxUser() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 71000, Gid: 71000, Groups: []uint32{}}}
}
