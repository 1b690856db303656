// Command kstatus computes the kstatus of live objects with sigs.k8s.io/cli-utils/pkg/kstatus, the
// library Flux's kustomize-controller uses to decide whether applied objects are healthy (`wait: true`):
// Current, InProgress, Failed, Terminating, Unknown.
//
//	kstatus < objects.json
//
// The input is one object, a JSON array of objects, or a List (`kubectl get -o json`). The output is a
// JSON array with one {"kind", "namespace", "name", "status", "message"} per object.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

func run(input []byte) ([]result, error) {
	var raw any
	if err := json.Unmarshal(input, &raw); err != nil {
		return nil, err
	}
	var items []any
	switch v := raw.(type) {
	case []any:
		items = v
	case map[string]any:
		if list, ok := v["items"].([]any); ok {
			items = list
		} else {
			items = []any{v}
		}
	default:
		return nil, fmt.Errorf("input must be an object, an array or a List")
	}
	results := make([]result, 0, len(items))
	for _, item := range items {
		if _, ok := item.(map[string]any); !ok {
			return nil, fmt.Errorf("every item must be an object")
		}
		// Decode again the way the API machinery does: integers as int64, which kstatus expects.
		encoded, err := json.Marshal(item)
		if err != nil {
			return nil, err
		}
		obj := map[string]any{}
		if err := utiljson.Unmarshal(encoded, &obj); err != nil {
			return nil, err
		}
		u := &unstructured.Unstructured{Object: obj}
		computed, err := status.Compute(u)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
		}
		results = append(results, result{u.GetKind(), u.GetNamespace(), u.GetName(), computed.Status.String(), computed.Message})
	}
	return results, nil
}

func main() {
	input, err := io.ReadAll(os.Stdin)
	if err == nil {
		var results []result
		if results, err = run(input); err == nil {
			err = json.NewEncoder(os.Stdout).Encode(results)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
		os.Exit(1)
	}
}
