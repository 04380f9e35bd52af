package rpc

import (
	"encoding/json"
	"fmt"

	"github.com/codebeaker/codebeaker/eventlog"
	"github.com/codebeaker/codebeaker/sandbox"
)

// permissions turns a session's grants as sent (true, false or a list of
// strings per field) into sandbox.Permissions; nil when none were sent.
// What a runtime makes of them is its own to check (Runtime.Validate). It
// reads the fields in order and stops at the first of the wrong form,
// returning those before it with the error, so that problems are told in
// the order the fields come.
func permissions(p *eventlog.Permissions) (*sandbox.Permissions, error) {
	if p == nil {
		return nil, nil
	}
	out := &sandbox.Permissions{}
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
	if len(list) == 0 {
		return nil, nil // an empty list grants nothing
	}
	return list, nil
}
