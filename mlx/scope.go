package mlx

// Scope owns the arrays created on the owner thread while it is the
// innermost open scope. Close frees all of them except those passed to
// Keep. Scopes nest; use them as
//
//	s := mlx.NewScope()
//	defer s.Close()
//	...
//	return s.Keep(result)
type Scope struct {
	arrays []*Array
	closed bool
	parent *Scope
}

// NewScope opens a scope on the owner thread.
func NewScope() *Scope {
	s := &Scope{}
	if n := len(owner.scopes); n > 0 {
		s.parent = owner.scopes[n-1]
	}
	owner.scopes = append(owner.scopes, s)
	return s
}

// Keep moves arrays out of this scope into its parent, or, for an outermost
// scope, makes them unowned (the caller must Free them). It returns its
// first argument for convenience.
func (s *Scope) Keep(arrays ...*Array) *Array {
	for _, a := range arrays {
		if a == nil || a.scope != s {
			continue
		}
		a.scope = s.parent
		if s.parent != nil {
			s.parent.arrays = append(s.parent.arrays, a)
		}
	}
	if len(arrays) == 0 {
		return nil
	}
	return arrays[0]
}

// KeepAll is Keep for a slice.
func (s *Scope) KeepAll(arrays []*Array) []*Array {
	s.Keep(arrays...)
	return arrays
}

// Close frees every array still owned by the scope and pops it. Closing an
// outer scope closes the scopes opened inside it.
func (s *Scope) Close() {
	if s.closed {
		return
	}
	for i := len(owner.scopes) - 1; i >= 0; i-- {
		top := owner.scopes[i]
		owner.scopes = owner.scopes[:i]
		top.closed = true
		for _, a := range top.arrays {
			if a.scope == top {
				a.Free()
			}
		}
		top.arrays = nil
		if top == s {
			break
		}
	}
}

// Detach removes a from whatever scope owns it, making it long-lived: the
// caller must Free it. Use it for weights and optimizer state built inside
// a scope.
func Detach(arrays ...*Array) {
	for _, a := range arrays {
		if a != nil {
			a.scope = nil
		}
	}
}
