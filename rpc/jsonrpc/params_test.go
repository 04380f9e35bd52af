package jsonrpc_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/codebeaker/codebeaker/rpc/jsonrpc"
)

type language string

func (l *language) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	if s == "cobol" {
		return jsonrpc.InvalidParams("unsupported language %q", s)
	}
	if s == "" {
		return errors.New("language must not be empty")
	}
	*l = language(s)
	return nil
}

type embedded struct {
	CPUShares int `json:"cpuShares"`
}

type createParams struct {
	embedded
	Language      language          `json:"language"`
	MemoryLimitMB int               `json:"memoryLimitMB"`
	Idle          *uint             `json:"idleTimeoutMinutes"`
	Ratio         float64           `json:"ratio"`
	Args          []string          `json:"args"`
	Env           map[string]string `json:"env"`
	Mounts        []struct {
		Path string `json:"path"`
	} `json:"mounts"`
	Permissions struct {
		AllowNet bool `json:"allowNet"`
	} `json:"permissions"`
}

func TestDecodeParams(t *testing.T) {
	for _, tc := range []struct{ params, want string }{
		{``, ``},
		{`null`, ``},
		{`{}`, ``},
		{`{"language":"python","memoryLimitMB":256,"unknown":[1,{"x":2}],"cpuShares":2}`, ``},
		{`{"memoryLimitMB":"512"}`, `invalid params: field "memoryLimitMB" must be a number`},
		{`{"memoryLimitMB":1.5}`, `invalid params: field "memoryLimitMB" must be an integer`},
		{`{"memoryLimitMB":1e40}`, `invalid params: field "memoryLimitMB" must be an integer`},
		{`{"idleTimeoutMinutes":-1}`, `invalid params: field "idleTimeoutMinutes" must be a non-negative integer`},
		{`{"idleTimeoutMinutes":true}`, `invalid params: field "idleTimeoutMinutes" must be a number`},
		{`{"cpuShares":"x"}`, `invalid params: field "cpuShares" must be a number`},
		{`{"ratio":"x"}`, `invalid params: field "ratio" must be a number`},
		{`{"language":5}`, `invalid params: field "language" must be a string`},
		{`{"language":""}`, `invalid params: language must not be empty`},
		{`{"language":"cobol"}`, `invalid params: unsupported language "cobol"`},
		{`{"args":"ls -l"}`, `invalid params: field "args" must be an array`},
		{`{"args":["-l",1]}`, `invalid params: field "args" must contain only strings`},
		{`{"env":{"A":1}}`, `invalid params: field "env" must contain only strings`},
		{`{"env":[]}`, `invalid params: field "env" must be an object`},
		{`{"mounts":[{"path":7}]}`, `invalid params: field "mounts.path" must be a string`},
		{`{"permissions":{"allowNet":"yes"}}`, `invalid params: field "permissions.allowNet" must be a boolean`},
		{`{"permissions":true}`, `invalid params: field "permissions" must be an object`},
		{`[1,2]`, `invalid params: params must be an object`},
		{`"x"`, `invalid params: params must be an object`},
		{`{"x"`, `invalid params: unexpected end of JSON input`},
	} {
		var p createParams
		err := jsonrpc.DecodeParams(json.RawMessage(tc.params), &p)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.params, err)
		case tc.want != "" && (err == nil || err.Code != jsonrpc.CodeInvalidParams || err.Message != tc.want || err.Data != nil):
			t.Errorf("%s: got %#v, want -32602 %q", tc.params, err, tc.want)
		}
	}
}

func TestDecodeParamsDecodes(t *testing.T) {
	var p createParams
	if err := jsonrpc.DecodeParams(json.RawMessage(`{"language":"go","idleTimeoutMinutes":5,"args":["a"],"cpuShares":9}`), &p); err != nil {
		t.Fatal(err)
	}
	if p.Language != "go" || p.Idle == nil || *p.Idle != 5 || len(p.Args) != 1 || p.CPUShares != 9 {
		t.Errorf("decoded %+v", p)
	}
}

func TestDecodeParamsPositional(t *testing.T) {
	var xs []int
	if err := jsonrpc.DecodeParams(json.RawMessage(`[1, 2]`), &xs); err != nil || len(xs) != 2 {
		t.Errorf("[1, 2]: %v, %v", xs, err)
	}
	if err := jsonrpc.DecodeParams(nil, &xs); err != nil {
		t.Errorf("missing params into a slice: %v", err)
	}
	for params, want := range map[string]string{
		`{"a":1}`:   `invalid params: params must be an array`,
		`[1,"2"]`:   `invalid params: params must contain only numbers`,
		`[1,[2]]`:   `invalid params: params must contain only numbers`,
		`[1, 2.5]`:  `invalid params: params must contain only integers`,
		`[[1], 2]`:  `invalid params: params must contain only numbers`,
		`[1, true]`: `invalid params: params must contain only numbers`,
	} {
		if err := jsonrpc.DecodeParams(json.RawMessage(params), &xs); err == nil || err.Message != want {
			t.Errorf("%s: %v, want %q", params, err, want)
		}
	}
}

func TestDecodeParamsNeedsAPointer(t *testing.T) {
	defer func() {
		if p := recover(); p == nil || !strings.Contains(p.(string), "DecodeParams") {
			t.Errorf("recovered %v, want a DecodeParams panic", p)
		}
	}()
	var p createParams
	jsonrpc.DecodeParams(json.RawMessage(`{}`), p)
}
