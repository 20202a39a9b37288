package hcl

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	hcl "github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/dynblock"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// Load reads and checks the configuration at paths. A path that is a
// directory contributes its *.hcl files in lexical order (conf.d style);
// all files form one configuration. The returned parser holds the sources,
// for printing diagnostics with context. The Config is nil when the
// diagnostics contain an error.
func Load(paths []string) (*Config, *hclparse.Parser, hcl.Diagnostics) {
	parser := hclparse.NewParser()
	var diags hcl.Diagnostics
	var files []*hcl.File
	var names []string
	for _, p := range paths {
		list, err := expand(p)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Cannot read configuration",
				Detail:   err.Error(),
				Subject:  &hcl.Range{Filename: p},
			})
			continue
		}
		for _, name := range list {
			f, ds := parser.ParseHCLFile(name)
			diags = append(diags, ds...)
			if f != nil {
				files = append(files, f)
				names = append(names, name)
			}
		}
	}
	if len(files) == 0 && !diags.HasErrors() {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "No configuration",
			Detail:   fmt.Sprintf("No .hcl file found in %s.", strings.Join(paths, ", ")),
		})
	}
	if diags.HasErrors() {
		return nil, parser, diags
	}
	baseDir := "."
	if len(paths) > 0 {
		if st, err := os.Stat(paths[0]); err == nil && st.IsDir() {
			baseDir = paths[0]
		} else {
			baseDir = filepath.Dir(paths[0])
		}
	}
	ctx := evalContext(baseDir)
	body := dynblock.Expand(hcl.MergeFiles(files), ctx)
	cfg, ds := decode(body, ctx)
	diags = append(diags, ds...)
	if diags.HasErrors() {
		return nil, parser, diags
	}
	cfg.Files = names
	return cfg, parser, diags
}

// expand turns a path into the list of files it stands for.
func expand(p string) ([]string, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []string{p}, nil
	}
	entries, err := os.ReadDir(p)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".hcl") {
			out = append(out, filepath.Join(p, e.Name()))
		}
	}
	sort.Strings(out)
	return out, nil
}

// WriteDiagnostics prints each diagnostic on one line as
// "file:line:col: summary: detail", the form editors and scripts parse.
func WriteDiagnostics(w io.Writer, diags hcl.Diagnostics) {
	for _, d := range diags {
		pos := "sluice"
		if d.Subject != nil && d.Subject.Filename != "" {
			if d.Subject.Start.Line > 0 {
				pos = fmt.Sprintf("%s:%d:%d", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
			} else {
				pos = d.Subject.Filename
			}
		}
		sev := "error"
		if d.Severity == hcl.DiagWarning {
			sev = "warning"
		}
		msg := d.Summary
		if d.Detail != "" {
			msg += ": " + strings.TrimSuffix(strings.ReplaceAll(d.Detail, "\n", " "), ".")
		}
		fmt.Fprintf(w, "%s: %s: %s\n", pos, sev, msg)
	}
}

// evalContext offers env() and file() plus a few of HCL's standard
// functions, enough to generate server lists with dynamic blocks.
func evalContext(baseDir string) *hcl.EvalContext {
	return &hcl.EvalContext{
		Functions: map[string]function.Function{
			"env":       envFunc,
			"file":      fileFunc(baseDir),
			"upper":     stdlib.UpperFunc,
			"lower":     stdlib.LowerFunc,
			"format":    stdlib.FormatFunc,
			"join":      stdlib.JoinFunc,
			"split":     stdlib.SplitFunc,
			"concat":    stdlib.ConcatFunc,
			"length":    stdlib.LengthFunc,
			"range":     stdlib.RangeFunc,
			"trimspace": stdlib.TrimSpaceFunc,
			"tostring":  stdlib.MakeToFunc(cty.String),
			"tonumber":  stdlib.MakeToFunc(cty.Number),
		},
	}
}

// envFunc returns an environment variable's value, or "" when it is unset.
var envFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "name", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		return cty.StringVal(os.Getenv(args[0].AsString())), nil
	},
})

// fileFunc returns a file's contents; relative paths start at baseDir,
// the directory of the first configuration path.
func fileFunc(baseDir string) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			p := args[0].AsString()
			if !filepath.IsAbs(p) {
				p = filepath.Join(baseDir, p)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return cty.NilVal, err
			}
			return cty.StringVal(string(b)), nil
		},
	})
}

var rootSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "global"},
		{Type: "defaults"},
		{Type: "frontend", LabelNames: []string{"name"}},
		{Type: "backend", LabelNames: []string{"name"}},
		{Type: "listen", LabelNames: []string{"name"}},
		{Type: "source_pool", LabelNames: []string{"name"}},
	},
}

// decodeBlock is gohcl.DecodeBody with the diagnostics collected.
func (d *decoder) decodeBlock(body hcl.Body, v any) bool {
	ds := gohcl.DecodeBody(body, d.ctx, v)
	d.diags = append(d.diags, ds...)
	return !ds.HasErrors()
}
