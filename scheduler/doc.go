// Package scheduler runs map jobs over a grid: it applies one registered
// function to a list of inputs on the nodes that offer it, in chunks sent
// with one shoal.map call each, and returns the results in input order.
package scheduler
