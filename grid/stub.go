package grid

import (
	"context"
	"fmt"

	"github.com/shoalgrid/shoal/rpc"
)

// Caller calls a method on the node at an RPC address. *rpc.Pool is one;
// tests may give an in-process fake.
type Caller interface {
	Call(ctx context.Context, addr, method string, result any, args ...any) error
}

// Stub calls the grid's methods on a node, with their wire types.
type Stub struct {
	Caller Caller
}

// Members returns every member the node at addr knows (shoal.members).
func (s Stub) Members(ctx context.Context, addr string) ([]Member, error) {
	var members []Member
	err := s.Caller.Call(ctx, addr, MethodMembers, &members)
	return members, err
}

// Functions returns the functions the live members offer, as the node at
// addr knows them (shoal.functions).
func (s Stub) Functions(ctx context.Context, addr string) ([]Function, error) {
	var fns []Function
	err := s.Caller.Call(ctx, addr, MethodFunctions, &fns)
	return fns, err
}

// View reads the members and functions the node at addr knows.
func (s Stub) View(ctx context.Context, addr string) (*View, error) {
	members, err := s.Members(ctx, addr)
	if err != nil {
		return nil, err
	}
	fns, err := s.Functions(ctx, addr)
	if err != nil {
		return nil, err
	}
	return NewView(members, fns), nil
}

// Describe returns the functions registered on the node at addr
// (shoal.describe).
func (s Stub) Describe(ctx context.Context, addr string) ([]rpc.FunctionInfo, error) {
	var fns []rpc.FunctionInfo
	err := s.Caller.Call(ctx, addr, MethodDescribe, &fns)
	return fns, err
}

// Map runs a chunk of items on the node at addr (shoal.map) and returns
// its reply: one value per item, in item order, and the failed items'
// errors.
func (s Stub) Map(ctx context.Context, addr string, req MapRequest) (MapReply, error) {
	var reply MapReply
	if err := s.Caller.Call(ctx, addr, MethodMap, &reply, &req); err != nil {
		return MapReply{}, err
	}
	if reply.Values.Count != req.Items.Count {
		return MapReply{}, fmt.Errorf("grid: %s answered %d results for %d items", addr, reply.Values.Count, req.Items.Count)
	}
	for _, e := range reply.Errors {
		if e.Index < 0 || e.Index >= req.Items.Count {
			return MapReply{}, fmt.Errorf("grid: %s answered an error for item %d of a chunk of %d", addr, e.Index, req.Items.Count)
		}
	}
	return reply, nil
}
