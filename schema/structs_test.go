package schema_test

import (
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/schema"
)

// TestSchemasMatchStructs checks, for every Go type of the contract, that the schema object
// describing it has exactly one property per json tag, and that "required" lists exactly the
// members without omitempty.
func TestSchemasMatchStructs(t *testing.T) {
	cases := []struct {
		kind schema.Kind
		ptr  string // JSON pointer of the object schema inside the schema document
		typ  any
	}{
		{schema.Request, "", contract.Request{}},
		{schema.Plan, "/$defs/plan", contract.Plan{}},
		{schema.Plan, "/$defs/token_info", contract.TokenInfo{}},
		{schema.Plan, "/$defs/object", contract.Object{}},
		{schema.Plan, "/$defs/counts", contract.Counts{}},
		{schema.Plan, "/$defs/file_action", contract.FileAction{}},
		{schema.Plan, "/$defs/step", contract.Step{}},
		{schema.Plan, "/$defs/space", contract.Space{}},
		{schema.Plan, "/$defs/multi", contract.Multi{}},
		{schema.Plan, "/$defs/skipped_slot", contract.SkippedSlot{}},
		{schema.Plan, "/$defs/host_plan", contract.HostPlan{}},
		{schema.Request, "/$defs/slot_request", contract.SlotRequest{}},
		{schema.Result, "/$defs/result", contract.Result{}},
		{schema.Result, "/$defs/result/properties/backup", contract.Backup{}},
		{schema.Result, "/$defs/host_result", contract.HostResult{}},
		{schema.Result, "/$defs/slot_outcome", contract.SlotOutcome{}},
		{schema.Result, "/$defs/error_body", contract.ErrorBody{}},
		{schema.Info, "", contract.Inventory{}},
		{schema.Info, "/$defs/slot_info", contract.SlotInfo{}},
		{schema.Info, "/$defs/slot_info/properties/files", contract.SlotFiles{}},
		{schema.Info, "/properties/fips", contract.FIPSMode{}},
	}
	for _, c := range cases {
		rt := reflect.TypeOf(c.typ)
		src, err := schema.Source(c.kind)
		require.NoError(t, err)
		var doc any
		require.NoError(t, json.Unmarshal(src, &doc))
		obj := doc
		if c.ptr != "" {
			for _, tok := range strings.Split(c.ptr[1:], "/") {
				obj = obj.(map[string]any)[tok]
			}
		}
		m := obj.(map[string]any)
		assert.Equal(t, false, m["additionalProperties"], rt.Name())

		var props, required []string
		for name := range m["properties"].(map[string]any) {
			props = append(props, name)
		}
		if r, ok := m["required"].([]any); ok {
			for _, x := range r {
				required = append(required, x.(string))
			}
		}
		var tags, always []string
		for i := 0; i < rt.NumField(); i++ {
			if !rt.Field(i).IsExported() {
				continue // not encoded
			}
			tag := rt.Field(i).Tag.Get("json")
			if tag == "-" {
				continue // not encoded
			}
			name, opts, _ := strings.Cut(tag, ",")
			require.NotEmpty(t, name, "%s.%s has no json name", rt.Name(), rt.Field(i).Name)
			tags = append(tags, name)
			if !strings.Contains(","+opts+",", ",omitempty,") {
				always = append(always, name)
			}
		}
		sort.Strings(props)
		sort.Strings(required)
		sort.Strings(tags)
		sort.Strings(always)
		assert.Equal(t, tags, props, "%s properties vs json tags", rt.Name())
		assert.Equal(t, always, required, "%s required vs members without omitempty", rt.Name())
	}
}
