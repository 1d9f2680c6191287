package cluster_test

import (
	"testing"

	"github.com/anishathalye/porcupine"
)

// The register model must reject a stale read and a CAS that won against a
// value that was already overwritten; otherwise the linearizability test
// could never fail.
func TestRegisterModelRejectsViolations(t *testing.T) {
	m := registerModel.ToModel()
	ok := []porcupine.Operation{
		{ClientId: 0, Input: regInput{Write: true, Expect: "", Value: "a"}, Call: 0, Output: regOutput{OK: true}, Return: 10},
		{ClientId: 1, Input: regInput{}, Call: 11, Output: regOutput{Value: "a"}, Return: 12},
		{ClientId: 1, Input: regInput{Write: true, Expect: "a", Value: "b"}, Call: 13, Output: regOutput{Unknown: true}, Return: 1 << 40},
		{ClientId: 0, Input: regInput{}, Call: 20, Output: regOutput{Value: "b"}, Return: 21},
	}
	if porcupine.CheckOperations(m, ok) != true {
		t.Fatal("a linearizable history was rejected")
	}
	stale := []porcupine.Operation{
		{ClientId: 0, Input: regInput{Write: true, Expect: "", Value: "a"}, Call: 0, Output: regOutput{OK: true}, Return: 10},
		{ClientId: 1, Input: regInput{}, Call: 11, Output: regOutput{Value: ""}, Return: 12},
	}
	if porcupine.CheckOperations(m, stale) {
		t.Fatal("a stale read after an acknowledged write was accepted")
	}
	lostUpdate := []porcupine.Operation{
		{ClientId: 0, Input: regInput{Write: true, Expect: "", Value: "a"}, Call: 0, Output: regOutput{OK: true}, Return: 10},
		{ClientId: 1, Input: regInput{Write: true, Expect: "", Value: "b"}, Call: 11, Output: regOutput{OK: true}, Return: 12},
	}
	if porcupine.CheckOperations(m, lostUpdate) {
		t.Fatal("two CAS from the same value both succeeding was accepted")
	}
}
