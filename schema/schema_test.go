package schema_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/schema"
)

const fp = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func ptr[T any](v T) *T { return &v }

// TestSchemasAreValid2020 checks every schema against the 2020-12 metaschema explicitly, and
// compiles it on its own as draft 2020-12.
func TestSchemasAreValid2020(t *testing.T) {
	meta, err := jsonschema.Compile("https://json-schema.org/draft/2020-12/schema")
	require.NoError(t, err)
	require.Equal(t, []schema.Kind{"request", "plan", "result", "error", "info"}, schema.Kinds())
	for _, k := range schema.Kinds() {
		src, err := schema.Source(k)
		require.NoError(t, err, k)
		var doc any
		require.NoError(t, json.Unmarshal(src, &doc), k)
		require.NoError(t, meta.Validate(doc), k)
		m := doc.(map[string]any)
		assert.Equal(t, "https://json-schema.org/draft/2020-12/schema", m["$schema"], k)
		assert.Equal(t, schema.URL(k), m["$id"], k)

		c := jsonschema.NewCompiler()
		c.Draft = jsonschema.Draft2020
		c.AssertFormat = true
		c.AssertContent = true
		require.NoError(t, c.AddResource(schema.URL(k), bytes.NewReader(src)), k)
		_, err = c.Compile(schema.URL(k))
		require.NoError(t, err, k)
	}
	_, err = schema.Source("nope")
	assert.ErrorIs(t, err, schema.ErrUnknownKind)
	assert.ErrorIs(t, schema.Validate("nope", []byte(`{}`)), schema.ErrUnknownKind)
}

// TestStrictEverywhere walks every object schema of the output schemas and checks it forbids
// unknown members.
func TestStrictEverywhere(t *testing.T) {
	for _, k := range schema.Kinds() {
		src, _ := schema.Source(k)
		var doc any
		require.NoError(t, json.Unmarshal(src, &doc))
		var walk func(path string, v any)
		walk = func(path string, v any) {
			switch x := v.(type) {
			case map[string]any:
				_, delegates := x["then"] // plan's root: the branches are strict
				if x["type"] == "object" && !delegates && path != "/properties/error/properties/details" {
					assert.Equal(t, false, x["additionalProperties"], "%s: %s", k, path)
				}
				for key, sub := range x {
					walk(path+"/"+key, sub)
				}
			case []any:
				for _, sub := range x {
					walk(path+"/[]", sub)
				}
			}
		}
		walk("", doc)
	}
}

func fullPlan() contract.Plan {
	return contract.Plan{
		FormatVersion:     contract.FormatVersion,
		ToolVersion:       "0.1.0",
		Changed:           true,
		Slot:              3,
		TokenType:         "CCA",
		Stdll:             "libpkcs11_cca.so",
		UserGroup:         "pkcs11",
		Datastore:         "/var/lib/opencryptoki/ccatok",
		Confdir:           "/etc/opencryptoki",
		Conf:              "/etc/opencryptoki/opencryptoki.conf",
		Format:            "mixed",
		ByteOrder:         "big-endian",
		ByteOrderEvidence: []string{"NVTOK.DAT: max PIN length 8 (134217728 read little-endian)"},
		ConfFormat:        "absent",
		PINsChecked:       false,
		Token: contract.TokenInfo{
			Label: "cca                             ", ManufacturerID: "IBM", Model: "CCA",
			SerialNumber: "0000", Flags: "0x64D", HardwareVersion: "1.0", FirmwareVersion: "1.0",
		},
		Objects: []contract.Object{
			{File: "0A000001", Private: true, Format: "old", Class: nil, Size: 900, Action: "reencrypt"},
			{File: "0B000001", Private: false, Format: "old", Class: ptr(int64(1)), ClassName: "CKO_CERTIFICATE",
				Label: "cert é", ID: "00ff", Size: 700, NewSize: 712, Action: "rewrap_header"},
			{File: "0C000001", Private: true, Format: "3.12", Class: ptr(int64(0x80000000)), ClassName: "CKO_VENDOR_DEFINED",
				Size: 1000, Action: "none"},
		},
		Counts:      contract.Counts{Total: 3, Public: 1, Private: 2, Reencrypt: 1, RewrapHeader: 1, None: 1},
		KeyFiles:    []contract.FileAction{{File: "NVTOK.DAT", Action: "rewrite"}, {File: "MK_SO", Action: "rewrite"}, {File: "MK_USER", Action: "create"}},
		ConfDiff:    "--- /etc/opencryptoki/opencryptoki.conf\n+++ /etc/opencryptoki/opencryptoki.conf\n@@ -1 +1,2 @@\n slot 3 {\n+tokversion = 3.12\n",
		Fingerprint: fp,
		Warnings:    []string{"MK_USER missing"},
		Incomplete:  []string{"private object 0A000001 not read: no PINs"},
		Steps: []contract.Step{
			{Op: "lock", Path: "/var/lib/opencryptoki/ccatok"},
			{Op: "copy", From: "/var/lib/opencryptoki/ccatok", To: "/var/lib/opencryptoki/ccatok.new"},
			{Op: "write_keys"}, {Op: "reencrypt", Note: "2 objects"}, {Op: "verify"}, {Op: "backup"},
			{Op: "exchange"}, {Op: "remove_shm", Path: "/dev/shm/var.lib.opencryptoki.ccatok"}, {Op: "conf_edit"},
		},
	}
}

func emptyPlan() contract.Plan {
	return contract.Plan{
		FormatVersion: contract.FormatVersion, ToolVersion: "0.1.0", Slot: 0, TokenType: "Soft",
		Stdll: "libpkcs11_sw.so", UserGroup: "pkcs11", Datastore: "/var/lib/opencryptoki/swtok",
		Confdir: "/etc/opencryptoki", Conf: "/etc/opencryptoki/opencryptoki.conf",
		Format: "3.12", ByteOrder: "any", ByteOrderEvidence: []string{}, ConfFormat: "3.12", Token: contract.TokenInfo{Flags: "0x0"},
		Objects: []contract.Object{}, KeyFiles: []contract.FileAction{}, Fingerprint: fp,
		Warnings: []string{}, Incomplete: []string{}, Steps: []contract.Step{},
	}
}

func TestPlanFromGo(t *testing.T) {
	require.NoError(t, schema.ValidateValue(schema.Plan, fullPlan()))
	require.NoError(t, schema.ValidateValue(schema.Plan, ptr(fullPlan())))
	require.NoError(t, schema.ValidateValue(schema.Plan, emptyPlan()))

	p := emptyPlan()
	p.Warnings = nil // marshals as null: the producer must emit []
	assertField(t, schema.Plan, p, "/warnings")
	p = emptyPlan()
	p.Steps = nil
	assertField(t, schema.Plan, p, "/steps")
	p = emptyPlan()
	p.Objects = nil
	assertField(t, schema.Plan, p, "/objects")

	p = fullPlan()
	p.Objects[0].Class = nil
	p.Objects[0].ClassName = "CKO_DATA"
	assertField(t, schema.Plan, p, "/objects/0/class_name")
	p = fullPlan()
	p.Steps[2].Op = "rm -rf"
	assertField(t, schema.Plan, p, "/steps/2/op")
	p = fullPlan()
	p.Fingerprint = "sha256:" + strings.Repeat("A", 64)
	assertField(t, schema.Plan, p, "/fingerprint")
	p = fullPlan()
	p.Objects[2].Format = "new"
	assertField(t, schema.Plan, p, "/objects/2/format")
	p = fullPlan()
	p.Datastore = "relative/dir"
	assertField(t, schema.Plan, p, "/datastore")
	p = fullPlan()
	p.ByteOrder = "native"
	assertField(t, schema.Plan, p, "/byte_order")
	p = emptyPlan()
	p.ByteOrderEvidence = nil
	assertField(t, schema.Plan, p, "/byte_order_evidence")
}

func TestMultiFromGo(t *testing.T) {
	m := contract.Multi{
		FormatVersion: contract.FormatVersion, Changed: true,
		Plans:   []contract.Plan{fullPlan(), emptyPlan()},
		Skipped: []contract.SkippedSlot{{Slot: 1, Stdll: "libpkcs11_tpm.so", Reason: "unsupported token type"}},
	}
	require.NoError(t, schema.ValidateValue(schema.Plan, m))
	require.NoError(t, schema.ValidateValue(schema.Plan, contract.Multi{FormatVersion: 1, Plans: []contract.Plan{}, Skipped: []contract.SkippedSlot{}}))

	m.Plans[1].Incomplete = nil
	assertField(t, schema.Plan, m, "/plans/1/incomplete")
	m = contract.Multi{FormatVersion: 1, Plans: []contract.Plan{}} // Skipped nil -> null
	assertField(t, schema.Plan, m, "/skipped")
}

func TestResultFromGo(t *testing.T) {
	r := contract.Result{
		Changed: true, Operation: "apply", Slot: 3, TokenType: "EP11",
		Datastore: "/var/lib/opencryptoki/ep11tok", Conf: "/etc/opencryptoki/opencryptoki.conf",
		Backup:          &contract.Backup{Datastore: "/var/lib/opencryptoki/ep11tok_BAK", Conf: "/etc/opencryptoki/opencryptoki.conf_BAK"},
		ObjectsMigrated: 4, ObjectsTotal: 5, RepositoryChanged: true, ConfChanged: true,
		ConfDiff: "--- a\n+++ b\n", Verified: true, Fingerprint: fp,
		Warnings: []string{"x"}, Steps: []contract.Op{contract.OpLock, contract.OpCopy, contract.OpWriteKeys, contract.OpReencrypt, contract.OpVerify, contract.OpExchange, contract.OpConfEdit},
	}
	require.NoError(t, schema.ValidateValue(schema.Result, r))
	r.Backup = &contract.Backup{Datastore: "/var/lib/opencryptoki/ep11tok_BAK"}
	require.NoError(t, schema.ValidateValue(schema.Result, r))
	r.Backup = nil
	r.Operation = "rollback"
	r.Warnings = []string{}
	require.NoError(t, schema.ValidateValue(schema.Result, r))

	r.Warnings = nil
	assertField(t, schema.Result, r, "/warnings")
	r.Warnings = []string{}
	r.TokenType = "unknown/unsupported"
	assertField(t, schema.Result, r, "/token_type")
}

func TestErrorCodes(t *testing.T) {
	codes := []string{"wrong_pin", "user_pin_not_set", "slot_daemon_running", "repository_in_use", "locked",
		"stale_plan", "slot_not_found", "unsupported_token", "conf_invalid", "corrupt_repository", "byte_order",
		"backup_exists", "bad_request", "not_root", "group_not_found", "group_mismatch", "io_error", "verify_failed",
		"nothing_to_roll_back", "internal"}
	for _, c := range codes {
		doc := map[string]any{"error": map[string]any{"code": c, "message": "m"}}
		assert.NoError(t, schema.ValidateValue(schema.Error, doc), c)
	}
	assert.NoError(t, schema.Validate(schema.Error,
		[]byte(`{"error":{"code":"bad_request","message":"m","field":"/slot","details":{"pid":[1,2]}}}`)))
	assertField(t, schema.Error, map[string]any{"error": map[string]any{"code": "nope", "message": "m"}}, "/error/code")
	assertField(t, schema.Error, map[string]any{"error": map[string]any{"code": "internal"}}, "/error/message")
	assertField(t, schema.Error, map[string]any{"error": map[string]any{"code": "internal", "message": "m", "pin": "1"}}, "/error/pin")
}

func TestRequest(t *testing.T) {
	req := contract.Request{Slot: ptr(0), Datastore: "/d", Confdir: "/c", SOPIN: "1", UserPINFile: "/u", PlanFile: "/p", AllSlots: true}
	require.NoError(t, schema.ValidateValue(schema.Request, req))
	require.NoError(t, schema.ValidateValue(schema.Request, contract.Request{}))
	// every Request field has a property in the schema (all set at once except the exclusive pairs)
	require.NoError(t, schema.ValidateValue(schema.Request, contract.Request{Slot: ptr(1023), SOPINFile: "/s", UserPIN: "u"}))

	cases := []struct {
		doc, field, msg string
	}{
		{`{"slot": "x"}`, "/slot", "integer"},
		{`{"slot": 1.5}`, "/slot", "integer"},
		{`{"slot": 5000}`, "/slot", "1023"},
		{`{"slot": -1}`, "/slot", "0"},
		{`{"bogus": 1}`, "/bogus", "bogus"},
		{`{"slot": 1, "zz": 1, "aa": 2}`, "/aa", `"zz"`},
		{`{"so_pin": "1", "so_pin_file": "/f"}`, "/so_pin", "so_pin_file"},
		{`{"user_pin": "1", "user_pin_file": "/f"}`, "/user_pin", "user_pin_file"},
		{`{"user_pin": ""}`, "/user_pin", ""},
		{`{"so_pin": "` + strings.Repeat("9", 256) + `"}`, "/so_pin", "255"},
		{`{"all_slots": "yes"}`, "/all_slots", "boolean"},
		{`{"slot": "x", "bogus": 1}`, "/slot", ""},
		{`[]`, "", "object"},
		{`{"slot": 1`, "", "JSON"},
		{`{"slot": 1} {}`, "", "JSON"},
	}
	for _, c := range cases {
		err := schema.Validate(schema.Request, []byte(c.doc))
		var ve *schema.ValidationError
		if assert.True(t, errors.As(err, &ve), "%s: %v", c.doc, err) {
			assert.Equal(t, schema.Request, ve.Kind, c.doc)
			assert.Equal(t, c.field, ve.Field, "%s: %v", c.doc, err)
			assert.Contains(t, ve.Message, c.msg, c.doc)
			assert.Contains(t, ve.Error(), c.field, c.doc)
		}
	}
}

// TestTestdata validates every testdata/good_<kind>_*.json and expects every
// testdata/fail_<kind>_*.json to fail (with the Field given in failField, when listed).
func TestTestdata(t *testing.T) {
	failField := map[string]string{
		"fail_request_slot_string.json":           "/slot",
		"fail_request_slot_range.json":            "/slot",
		"fail_request_unknown_key.json":           "/bogus",
		"fail_request_so_pin_both.json":           "/so_pin",
		"fail_request_user_pin_both.json":         "/user_pin",
		"fail_request_empty_pin.json":             "/so_pin",
		"fail_request_array.json":                 "",
		"fail_plan_null_warnings.json":            "/warnings",
		"fail_plan_class_name_without_class.json": "/objects/1/class_name",
		"fail_plan_fingerprint.json":              "/fingerprint",
		"fail_plan_token_type.json":               "/token_type",
		"fail_plan_step_op.json":                  "/steps/0/op",
		"fail_plan_old_object_action_none.json":   "/objects/0/action",
		"fail_plan_id_not_hex.json":               "/objects/0/id",
		"fail_plan_missing_token.json":            "/token",
		"fail_plan_multi_bad_format.json":         "/plans/0/format",
		"fail_plan_multi_null_skipped.json":       "/skipped",
		"fail_result_operation.json":              "/operation",
		"fail_result_null_steps.json":             "/steps",
		"fail_result_backup_extra.json":           "/backup/extra",
		"fail_error_code.json":                    "/error/code",
		"fail_error_extra.json":                   "/exit",
		"fail_info_objects_for_missing.json":      "/slots/0/objects",
		"fail_info_unsupported_format.json":       "/slots/0/format",
		"fail_info_files_extra.json":              "/slots/0/files/so_pin",
		"fail_info_byte_order_unread.json":        "/slots/0/byte_order",
	}
	names, err := filepath.Glob("testdata/*.json")
	require.NoError(t, err)
	seen := map[string]bool{}
	for _, path := range names {
		name := filepath.Base(path)
		parts := strings.SplitN(strings.TrimSuffix(name, ".json"), "_", 3)
		require.Len(t, parts, 3, name)
		kind := schema.Kind(parts[1])
		doc, err := os.ReadFile(path)
		require.NoError(t, err)
		seen[parts[0]+"/"+parts[1]] = true
		t.Run(name, func(t *testing.T) {
			err := schema.Validate(kind, doc)
			switch parts[0] {
			case "good":
				assert.NoError(t, err)
			case "fail":
				var ve *schema.ValidationError
				require.True(t, errors.As(err, &ve), "want a ValidationError, got %v", err)
				if f, ok := failField[name]; ok {
					assert.Equal(t, f, ve.Field, ve.Error())
				}
			default:
				t.Fatalf("testdata file %s: name must start with good_ or fail_", name)
			}
		})
	}
	for _, k := range schema.Kinds() {
		assert.True(t, seen["good/"+string(k)], "no good_%s_*.json", k)
		assert.True(t, seen["fail/"+string(k)], "no fail_%s_*.json", k)
	}
	for name := range failField {
		_, err := os.Stat(filepath.Join("testdata", name))
		assert.NoError(t, err)
	}
}

func TestConcurrentValidate(t *testing.T) {
	done := make(chan error)
	for i := 0; i < 8; i++ {
		go func() { done <- schema.ValidateValue(schema.Plan, fullPlan()) }()
	}
	for i := 0; i < 8; i++ {
		assert.NoError(t, <-done)
	}
}

func assertField(t *testing.T, k schema.Kind, v any, field string) {
	t.Helper()
	err := schema.ValidateValue(k, v)
	var ve *schema.ValidationError
	if assert.True(t, errors.As(err, &ve), "want a ValidationError, got %v", err) {
		assert.Equal(t, field, ve.Field, ve.Error())
	}
}
