import Foundation
import FleetSyncTestSupport
import XCTest
@testable import FleetSyncCore

final class MergePropertyTests: XCTestCase {
    static let cases = 1_000
    static let nodes = ["shore", "aurora", "borealis"]
    static let fieldNames = ["rank", "notes", "contact", ChangeEvent.deletedField]
    static let rows = (0..<3).map { UUID(uuidString: "00000000-0000-7000-8000-00000000000\($0)")! }

    /// Random events as nodes would produce them: each node's counter only grows, and a node never
    /// gives one clock two values.
    func randomEvents(_ rng: inout SplitMix64, count: Int) -> [ChangeEvent] {
        var counters: [String: Int64] = [:]
        return (0..<count).map { _ in
            let node = Self.nodes.randomElement(using: &rng)!
            let counter = (counters[node] ?? Int64.random(in: 0...3, using: &rng)) + Int64.random(in: 1...3, using: &rng)
            counters[node] = counter
            var fields: [String: FieldChange] = [:]
            for name in Self.fieldNames where Bool.random(using: &rng) {
                let value: JSONValue = name == ChangeEvent.deletedField ? .bool(true) : .string("\(node)-\(counter)-\(name)")
                fields[name] = FieldChange(value: value, clock: FieldClock(counter: counter, node: node))
            }
            if fields.isEmpty { fields["rank"] = FieldChange(value: .string("\(node)-\(counter)"), clock: FieldClock(counter: counter, node: node)) }
            return ChangeEvent(table: "seafarer", rowID: Self.rows.randomElement(using: &rng)!, fields: fields, origin: node)
        }
    }

    func state(_ rng: inout SplitMix64) -> RowState {
        randomEvents(&rng, count: Int.random(in: 0...4, using: &rng)).reduce(RowState()) { $0.merging(RowState($1)) }
    }

    func testMergeIsCommutative() {
        for seed in 0..<UInt64(Self.cases) {
            var rng = SplitMix64(seed: seed)
            let a = state(&rng), b = state(&rng)
            XCTAssertEqual(a.merging(b), b.merging(a), "seed \(seed)")
        }
    }

    func testMergeIsAssociative() {
        for seed in 0..<UInt64(Self.cases) {
            var rng = SplitMix64(seed: seed &+ 10_000)
            let a = state(&rng), b = state(&rng), c = state(&rng)
            XCTAssertEqual(a.merging(b).merging(c), a.merging(b.merging(c)), "seed \(seed)")
        }
    }

    func testMergeIsIdempotent() {
        for seed in 0..<UInt64(Self.cases) {
            var rng = SplitMix64(seed: seed &+ 20_000)
            let a = state(&rng), b = state(&rng)
            XCTAssertEqual(a.merging(a), a, "seed \(seed)")
            XCTAssertEqual(a.merging(b).merging(b), a.merging(b), "seed \(seed)")
        }
    }

    /// Any interleaving, duplication or reordering of several nodes' streams ends in the same rows,
    /// including whether each row counts as deleted under either tombstone rule.
    func testAnyDeliveryOrderConverges() {
        for seed in 0..<UInt64(Self.cases) {
            var rng = SplitMix64(seed: seed &+ 30_000)
            let events = randomEvents(&rng, count: Int.random(in: 1...12, using: &rng))
            func deliver(_ stream: [ChangeEvent]) -> [UUID: RowState] {
                var rows: [UUID: RowState] = [:]
                for event in stream { rows[event.rowID, default: RowState()].merge(event.fields) }
                return rows
            }
            let reference = deliver(events)
            for _ in 0..<3 {
                var stream = events
                for _ in 0..<Int.random(in: 0...4, using: &rng) { stream.append(events.randomElement(using: &rng)!) }
                stream.shuffle(using: &rng)
                let replica = deliver(stream)
                XCTAssertEqual(replica, reference, "seed \(seed)")
                for (id, row) in replica {
                    XCTAssertEqual(row.isDeleted(.wins), reference[id]!.isDeleted(.wins), "seed \(seed)")
                    XCTAssertEqual(row.isDeleted(.revive), reference[id]!.isDeleted(.revive), "seed \(seed)")
                }
            }
        }
    }

    func testLaterClockWinsAndTiesBreakByNodeID() {
        var row = RowState()
        row.merge(["notes": FieldChange(value: .string("old"), clock: FieldClock(counter: 5, node: "shore"))])
        row.merge(["notes": FieldChange(value: .string("stale"), clock: FieldClock(counter: 4, node: "aurora"))])
        XCTAssertEqual(row.fields["notes"]?.value, .string("old"))
        row.merge(["notes": FieldChange(value: .string("tie"), clock: FieldClock(counter: 5, node: "zulu"))])
        XCTAssertEqual(row.fields["notes"]?.value, .string("tie"), "equal counters: the larger node id wins")
    }

    func testTombstoneWinsUnlessTableRevives() {
        var row = RowState()
        row.merge([ChangeEvent.deletedField: FieldChange(value: .bool(true), clock: FieldClock(counter: 3, node: "shore"))])
        row.merge(["notes": FieldChange(value: .string("later edit"), clock: FieldClock(counter: 9, node: "aurora"))])
        XCTAssertTrue(row.isDeleted(.wins))
        XCTAssertFalse(row.isDeleted(.revive), "a later update revives on a revive table")
        row.merge([ChangeEvent.deletedField: FieldChange(value: .bool(true), clock: FieldClock(counter: 10, node: "shore"))])
        XCTAssertTrue(row.isDeleted(.revive), "a tombstone later than every update deletes")
    }

    func testOwnershipRejectsWritesByNonOwners() {
        let table = TableConfiguration(name: "seafarer", route: .column("vessel_code"), owners: ["contact": .vessel, "notes": .shared])
        let policy = OwnershipPolicy(table: table, shoreID: "shore")
        let event = ChangeEvent(table: "seafarer", rowID: UUID(), fields: [
            "rank": FieldChange(value: .string("Master"), clock: FieldClock(counter: 4, node: "aurora")),
            "contact": FieldChange(value: .string("1"), clock: FieldClock(counter: 4, node: "aurora")),
            "notes": FieldChange(value: .string("n"), clock: FieldClock(counter: 4, node: "aurora")),
            "full_name": FieldChange(value: .string("created"), clock: FieldClock(counter: 0, node: "aurora")),
        ], origin: "aurora")
        let (accepted, rejected) = policy.admit(event, sender: "aurora", routedVessel: "aurora")
        XCTAssertEqual(Set(accepted.fields.keys), ["contact", "notes", "full_name"])
        XCTAssertEqual(rejected.map(\.field), ["rank"])
        XCTAssertEqual(rejected.first?.reason, "field is owned by the shore")
        // Another vessel may not write aurora's row's vessel-owned field, nor forge a clock.
        let other = policy.admit(event, sender: "borealis", routedVessel: "aurora")
        XCTAssertTrue(other.accepted.fields.isEmpty)
        var forged = event
        forged.fields = ["notes": FieldChange(value: .string("x"), clock: FieldClock(counter: 4, node: "shore"))]
        XCTAssertEqual(policy.admit(forged, sender: "aurora", routedVessel: nil).rejected.first?.reason.contains("only send its own writes"), true)
        // What the shore relays is trusted.
        XCTAssertTrue(policy.admit(forged, sender: "shore", routedVessel: nil).rejected.isEmpty)
    }
}
