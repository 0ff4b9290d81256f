// The classifier's exact-match fast path in C++ (DESIGN.md §2: Open vSwitch's
// split). Mirrors classifier/flow-table.ts (slot layout, hash) and
// classifier/extract.ts extractFlowKeyFast (what the fast parser accepts);
// TypeScript stays the only writer of the table and the slow path.
#pragma once

#include <node_api.h>

namespace flowstack {

// Adds allocHugeBuffer and flowLookupBatch to the addon's exports.
void RegisterFlowTable(napi_env env, napi_value exports);

}  // namespace flowstack
