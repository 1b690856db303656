// Command argocd-lua-health runs an Argo CD resource health check (a Lua script) on live objects with
// gopher-lua, the interpreter Argo CD embeds, the way Argo CD calls it: the object is the global `obj`
// (JSON objects become tables, arrays become 1-based tables), the script returns a table with
// `status` (Healthy, Progressing, Degraded, Suspended, Missing, Unknown) and `message`.
//
//	argocd-lua-health SCRIPT.lua < objects.json
//
// The input is one object, a JSON array of objects, or a List (`kubectl get -o json`). The output is
// a JSON array with one {"kind", "namespace", "name", "status", "message"} per object. Only the
// libraries Argo CD opens for health scripts are available (base, table, string, math).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	lua "github.com/yuin/gopher-lua"
)

type result struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

func toLua(L *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		table := L.NewTable()
		for i, item := range v {
			table.RawSetInt(i+1, toLua(L, item))
		}
		return table
	case map[string]any:
		table := L.NewTable()
		for key, item := range v {
			table.RawSetString(key, toLua(L, item))
		}
		return table
	}
	panic(fmt.Sprintf("unexpected JSON value %T", value))
}

func evaluate(script string, obj map[string]any) (string, string, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		if err := L.CallByParam(lua.P{Fn: L.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return "", "", err
		}
	}
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		return "", "", err
	}
	table, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("the script returned %s, not a table", L.Get(-1).Type())
	}
	return lua.LVAsString(table.RawGetString("status")), lua.LVAsString(table.RawGetString("message")), nil
}

func objects(data []byte) ([]map[string]any, error) {
	var raw any
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	var items []any
	switch v := raw.(type) {
	case []any:
		items = v
	case map[string]any:
		if list, ok := v["items"].([]any); ok && v["kind"] != nil {
			items = list
		} else {
			items = []any{v}
		}
	default:
		return nil, fmt.Errorf("input must be an object, an array or a List")
	}
	out := make([]map[string]any, 0, len(items))
	for _, item := range items {
		obj, ok := item.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("every item must be an object")
		}
		out = append(out, obj)
	}
	return out, nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: argocd-lua-health SCRIPT.lua < objects.json")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err == nil {
		var input []byte
		if input, err = io.ReadAll(os.Stdin); err == nil {
			var objs []map[string]any
			if objs, err = objects(input); err == nil {
				results := make([]result, 0, len(objs))
				for _, obj := range objs {
					meta, _ := obj["metadata"].(map[string]any)
					status, message, evalErr := evaluate(string(script), obj)
					if evalErr != nil {
						fmt.Fprintf(os.Stderr, "argocd-lua-health: %v: %v\n", meta["name"], evalErr)
						os.Exit(1)
					}
					kind, _ := obj["kind"].(string)
					namespace, _ := meta["namespace"].(string)
					name, _ := meta["name"].(string)
					results = append(results, result{kind, namespace, name, status, message})
				}
				err = json.NewEncoder(os.Stdout).Encode(results)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "argocd-lua-health: %v\n", err)
		os.Exit(1)
	}
}
