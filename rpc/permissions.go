package rpc

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/sandbox"
)

const maxPermissionEntries = 64

// permissions turns a Deno session's grants as sent (true, false or a list
// per field) into sandbox.Permissions.
func permissions(p *eventlog.Permissions) (sandbox.Permissions, error) {
	var out sandbox.Permissions
	if p == nil {
		return out, nil
	}
	fields := []struct {
		name string
		raw  json.RawMessage
		dst  *[]string
	}{
		{"allowRead", p.AllowRead, &out.Read},
		{"allowWrite", p.AllowWrite, &out.Write},
		{"allowNet", p.AllowNet, &out.Net},
		{"allowEnv", p.AllowEnv, &out.Env},
	}
	for _, f := range fields {
		grant, err := permission(f.raw)
		if err != nil {
			return out, &invalidParams{fmt.Sprintf("permissions.%s %s", f.name, err)}
		}
		*f.dst = grant
	}
	return out, nil
}

func permission(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" || string(raw) == "false" {
		return nil, nil
	}
	if string(raw) == "true" {
		return []string{}, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("must be true, false or a list of strings")
	}
	if len(list) > maxPermissionEntries {
		return nil, fmt.Errorf("lists %d entries; at most %d", len(list), maxPermissionEntries)
	}
	for _, item := range list {
		if item == "" || len(item) > 4096 || strings.ContainsAny(item, ",\x00") {
			return nil, fmt.Errorf("has an empty or over-long entry, or one with a comma (Deno's list separator)")
		}
	}
	if len(list) == 0 {
		return nil, nil // an empty list grants nothing
	}
	return list, nil
}
