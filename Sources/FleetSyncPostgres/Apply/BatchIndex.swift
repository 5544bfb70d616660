import FleetSyncCore
import Foundation

/// Where each row's events are in a batch: the first read of a batch builds it, and the applier
/// then decodes and applies the batch a slice of rows at a time. It holds a few numbers per event
/// and per row, never the events.
struct BatchIndex: Sendable {
    struct Row: Sendable {
        var id: UUID
        /// Arrival index of the row's first event (since its last offboarding): the sequence order.
        var sequence: Int
        var first: Int32 = -1
        var last: Int32 = -1
    }

    /// A slice of one table's rows, applied together.
    struct Chunk: Sendable {
        var table: String
        var rows: [Row]
    }

    private(set) var count = 0
    private var tokens: [Int] = []
    private var next: [Int32] = []
    private var rowSlots: [String: [UUID: Int]] = [:]
    private var rows: [String: [Row]] = [:]
    /// Rows that left this vessel's partition (transfer saga) at some point of the batch, by table:
    /// their local copies are removed before anything is written, so that events after the
    /// offboarding (a row that came back with a baseline) start from nothing, as they would
    /// applied one by one.
    private(set) var offboards: [String: Set<UUID>] = [:]

    mutating func add(token: Int, event: EventRow) {
        count += 1
        if event.offboard {
            // The row leaves this vessel; whatever arrived for it earlier in the batch is moot.
            if let slot = rowSlots[event.table]?[event.rowID] {
                rows[event.table]![slot].first = -1
                rows[event.table]![slot].last = -1
            }
            offboards[event.table, default: []].insert(event.rowID)
            return
        }
        let index = Int32(tokens.count)
        tokens.append(token)
        next.append(-1)
        let slot: Int
        if let existing = rowSlots[event.table]?[event.rowID] {
            slot = existing
        } else {
            slot = rows[event.table, default: []].count
            rows[event.table, default: []].append(Row(id: event.rowID, sequence: count))
            rowSlots[event.table, default: [:]][event.rowID] = slot
        }
        let last = rows[event.table]![slot].last
        if last < 0 {
            rows[event.table]![slot].first = index
            rows[event.table]![slot].sequence = count
        } else {
            next[Int(last)] = index
        }
        rows[event.table]![slot].last = index
    }

    /// The batch in slices of at most `size` rows: tables in `tableOrder` first, then tables this
    /// node does not have (by name), rows by sequence. A table in `whole` (one that references
    /// itself, whose rows must be ordered parent first among all of them) is one slice.
    /// The batch in slices of at most `size` rows: tables in `tableOrder` first, then tables this
    /// node does not have (by name), rows by sequence. A table in `whole` (one that references
    /// itself, whose rows must be ordered parent first among all of them) is one slice. Frees
    /// what only the first read needed (where each row is).
    mutating func takeChunks(tableOrder: [String], whole: Set<String>, size: Int) -> [Chunk] {
        let known = Set(tableOrder)
        let order = tableOrder.filter { rows[$0] != nil } + rows.keys.filter { !known.contains($0) }.sorted()
        var chunks: [Chunk] = []
        for table in order {
            let live = rows[table]!.filter { $0.first >= 0 }.sorted { $0.sequence < $1.sequence }
            let step = whole.contains(table) ? max(live.count, 1) : size
            for start in stride(from: 0, to: live.count, by: step) {
                chunks.append(Chunk(table: table, rows: Array(live[start..<min(start + step, live.count)])))
            }
        }
        rowSlots = [:]
        rows = [:]
        return chunks
    }

    /// Calls `body` with the token of each of the row's events, in arrival order.
    func forEachToken(of row: Row, _ body: (Int) throws -> Void) rethrows {
        var e = row.first
        while e >= 0 {
            try body(tokens[Int(e)])
            e = next[Int(e)]
        }
    }
}
