// yamloracle reads YAML the way Kubernetes and Helm do (sigs.k8s.io/yaml, go-yaml v2
// resolution) and prints what they make of it, so fleetbus's own YAML reader can be checked
// against the real thing.
//
// Input on stdin: a JSON array of YAML documents (strings). Output on stdout: a JSON array with
// one result per document, in order:
//
//	{"json": <the document as sigs.k8s.io/yaml.YAMLToJSON converts it>, "error": "...",
//	 "strict_error": "..."}
//
// "json" is absent when YAMLToJSON fails ("error" says why); "strict_error" is set when
// YAMLToJSONStrict refuses the document (duplicate keys) although the lenient form reads it.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"sigs.k8s.io/yaml"
)

type result struct {
	JSON        json.RawMessage `json:"json,omitempty"`
	Error       string          `json:"error,omitempty"`
	StrictError string          `json:"strict_error,omitempty"`
}

func convert(document string) result {
	converted, err := yaml.YAMLToJSON([]byte(document))
	if err != nil {
		return result{Error: err.Error()}
	}
	out := result{JSON: converted}
	if _, err := yaml.YAMLToJSONStrict([]byte(document)); err != nil {
		out.StrictError = err.Error()
	}
	return out
}

func main() {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "yamloracle: reading stdin: %v\n", err)
		os.Exit(1)
	}
	var documents []string
	if err := json.Unmarshal(input, &documents); err != nil {
		fmt.Fprintf(os.Stderr, "yamloracle: stdin must be a JSON array of strings: %v\n", err)
		os.Exit(1)
	}
	results := make([]result, len(documents))
	for i, document := range documents {
		results[i] = convert(document)
	}
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(results); err != nil {
		fmt.Fprintf(os.Stderr, "yamloracle: writing stdout: %v\n", err)
		os.Exit(1)
	}
}
