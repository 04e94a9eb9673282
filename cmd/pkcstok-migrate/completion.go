package main

import (
	"fmt"
	"sort"
	"strings"
)

// bashCompletion renders the bash completion script from the command table in cli.go. The
// committed copy (packaging/pkcstok-migrate.bash-completion) is checked by
// TestBashCompletionUpToDate. It needs nothing but bash (not the bash-completion helpers).
func bashCompletion() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	var names []string
	for _, c := range commands {
		names = append(names, c.name)
	}
	w("# bash completion for pkcstok-migrate. Generated from the command table in\n")
	w("# cmd/pkcstok-migrate/cli.go by 'make man'; do not edit.\n")
	w("_pkcstok_migrate() {\n")
	w("    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmd=${COMP_WORDS[1]}\n")
	w("    COMPREPLY=()\n")
	w("    if [ \"$COMP_CWORD\" -eq 1 ]; then\n")
	w("        case $cur in\n")
	w("        -*) COMPREPLY=($(compgen -W '%s' -- \"$cur\")) ;;\n", strings.Join(legacyWords(), " "))
	w("        *) COMPREPLY=($(compgen -W '%s' -- \"$cur\")) ;;\n", strings.Join(names, " "))
	w("        esac\n        return 0\n    fi\n")

	// Values of the flags that take one, by completion kind.
	kinds := map[string][]string{}
	for _, f := range flagSpecs {
		if f.arg == "" {
			continue
		}
		kinds[f.complete] = append(kinds[f.complete], "--"+f.name)
	}
	for _, o := range legacyOpts {
		switch o.short {
		case 'd', 'c':
			kinds["dir"] = append(kinds["dir"], fmt.Sprintf("-%c", o.short), "--"+o.long)
		case 'v':
			kinds["level"] = append(kinds["level"], fmt.Sprintf("-%c", o.short), "--"+o.long)
		case 'h':
		default:
			kinds[""] = append(kinds[""], fmt.Sprintf("-%c", o.short), "--"+o.long)
		}
	}
	var order []string
	for k, words := range kinds {
		order = append(order, k)
		seen := map[string]bool{}
		var uniq []string
		for _, x := range words {
			if !seen[x] {
				seen[x] = true
				uniq = append(uniq, x)
			}
		}
		kinds[k] = uniq
	}
	sort.Strings(order)
	w("    case $prev in\n")
	for _, k := range order {
		w("    %s)\n", strings.Join(kinds[k], "|"))
		switch k {
		case "dir":
			w("        COMPREPLY=($(compgen -d -- \"$cur\"))\n")
		case "file":
			w("        COMPREPLY=($(compgen -f -- \"$cur\"))\n")
		case "file-or-stdin":
			w("        COMPREPLY=($(compgen -f -W '-' -- \"$cur\"))\n")
		case "level":
			w("        COMPREPLY=($(compgen -W '%s' -- \"$cur\"))\n", strings.Join(legacyLevels, " "))
		}
		w("        return 0 ;;\n")
	}
	w("    esac\n")

	w("    case $cmd in\n")
	for _, c := range commands {
		var words []string
		for _, name := range c.flags {
			f := flagByName(name)
			words = append(words, strings.TrimSuffix(f.flagLine(), " "+f.arg))
		}
		words = append(words, "--help")
		w("    %s)\n", c.name)
		switch {
		case c.name == "help":
			w("        COMPREPLY=($(compgen -W '%s' -- \"$cur\")) ;;\n", strings.Join(names, " "))
		case len(c.choices) > 0:
			w("        COMPREPLY=($(compgen -W '%s' -- \"$cur\")) ;;\n", strings.Join(c.choices, " "))
		default:
			w("        COMPREPLY=($(compgen -W '%s' -- \"$cur\")) ;;\n", strings.Join(words, " "))
		}
	}
	w("    -*)\n        COMPREPLY=($(compgen -W '%s' -- \"$cur\")) ;;\n", strings.Join(legacyWords(), " "))
	w("    esac\n    return 0\n}\n")
	w("complete -o filenames -F _pkcstok_migrate pkcstok-migrate\n")
	return b.String()
}

// legacyWords are the upstream interface's options, short and long.
func legacyWords() []string {
	var out []string
	for _, o := range legacyOpts {
		out = append(out, fmt.Sprintf("-%c", o.short), "--"+o.long)
	}
	return out
}
