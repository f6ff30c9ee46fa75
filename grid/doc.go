// Package grid is the protocol a Shoal client and the nodes of a grid
// speak on top of msgpack-rpc: the wire types (members, functions, map
// chunks), the names of the shoal.* methods, a typed Stub over any Caller
// (an *rpc.Pool is one), and the immutable member View that clients and
// the scheduler route by.
//
// Nodes serve this protocol (package node); clients and the scheduler use
// it. It links no gossip or metrics library, so neither does a client:
//
//	stub := grid.Stub{Caller: rpc.NewPool(rpc.ClientConfig{})}
//	view, err := stub.View(ctx, "127.0.0.1:7373")
//	best, ok := view.LeastLoaded("square")
//
// Method names, their params and their results:
//
//	shoal.members    []        -> []Member, every member the node knows
//	shoal.functions  []        -> []Function, what the live members offer
//	shoal.cache      []        -> CacheInfo, the kind of result cache the node uses, its share and counters
//	shoal.cache.get  [keys]    -> [value or nil, ...], what the node holds of the grid cache, in key order
//	shoal.cache.set  [keys, values] -> nil, stores values in the node's share of the grid cache
//	shoal.map        [MapRequest] -> MapReply, one value per item, in item order, and the failed items' errors
//
// and the rpc package's own shoal.ping, shoal.describe, shoal.auth and
// shoal.cancel.
package grid

import "github.com/shoalgrid/shoal/rpc"

// The shoal.* methods. The first four are built into every rpc.Server; a
// node adds the rest.
const (
	MethodPing      = rpc.MethodPing
	MethodDescribe  = rpc.MethodDescribe
	MethodAuth      = rpc.MethodAuth
	MethodCancel    = rpc.MethodCancel
	MethodMembers   = "shoal.members"
	MethodFunctions = "shoal.functions"
	MethodCache     = "shoal.cache"
	MethodCacheGet  = "shoal.cache.get"
	MethodCacheSet  = "shoal.cache.set"
	MethodMap       = "shoal.map"
)
