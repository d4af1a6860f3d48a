package access

import "testing"

func TestRules(t *testing.T) {
	f := func(allow, deny []string, name, want string) {
		t.Helper()
		r, err := Compile(allow, deny)
		if err != nil {
			t.Fatalf("unexpected error: %s", err)
		}
		if got := r.Check([]byte(name)); got != want {
			t.Fatalf("unexpected Check(%q) with allow %q deny %q: got %q; want %q", name, allow, deny, got, want)
		}
	}
	f(nil, nil, "anything/at/all", "")
	f([]string{"library/*"}, nil, "library/nginx", "")
	f([]string{"library/*"}, nil, "library/a/b", "not in the allow list")
	f([]string{"library/*"}, nil, "myorg/app", "not in the allow list")
	f([]string{"myorg/**"}, nil, "myorg/a/b/c", "")
	f([]string{"myorg/**"}, nil, "myorgx/a", "not in the allow list")
	f([]string{"*/app"}, nil, "x/app", "")
	f([]string{"*/app"}, nil, "x/y/app", "not in the allow list")
	f([]string{"**/app"}, nil, "x/y/app", "")
	f([]string{"a*b"}, nil, "axxb", "")
	f([]string{"a*b"}, nil, "ax/xb", "not in the allow list")
	f([]string{"library/nginx"}, nil, "library/nginx", "")
	f([]string{"library/nginx"}, nil, "library/nginx2", "not in the allow list")
	f(nil, []string{"evil/**"}, "evil/x", "deny evil/**")
	f([]string{"**"}, []string{"library/secret*"}, "library/secret-sauce", "deny library/secret*")
	f([]string{"**"}, []string{"library/secret*"}, "library/nginx", "")
}

func TestCompileErrors(t *testing.T) {
	for _, p := range []string{"", "/a", "a/", "a/***"} {
		if _, err := Compile([]string{p}, nil); err == nil {
			t.Fatalf("expected an error for pattern %q", p)
		}
	}
}

func TestCheckDoesNotAllocate(t *testing.T) {
	r, _ := Compile([]string{"library/*", "myorg/**"}, []string{"library/bad*"})
	name := []byte("myorg/team/app")
	if n := testing.AllocsPerRun(100, func() { _ = r.Check(name) }); n != 0 {
		t.Fatalf("unexpected allocations: got %v; want 0", n)
	}
}

func FuzzMatch(f *testing.F) {
	f.Add("library/*", "library/nginx")
	f.Add("a/**/b", "a/x/y/b")
	f.Fuzz(func(t *testing.T, p, name string) {
		r, err := Compile([]string{p}, nil)
		if err != nil {
			return
		}
		_ = r.Check([]byte(name))
	})
}
