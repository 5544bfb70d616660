import FleetSyncCore
import FleetSyncTestSupport
import Foundation
import XCTest
@testable import FleetSyncPostgres

/// Applying a batch slice by slice ends in the same rows as applying it in one slice, and as
/// applying its events one by one.
final class SliceApplyTests: DatabaseTestCase {
    func change(_ table: String, _ id: UUID, _ fields: [String: JSONValue], clock: Int64) -> ChangeEvent {
        ChangeEvent(table: table, rowID: id, fields: fields.mapValues { FieldChange(value: $0, clock: FieldClock(counter: clock, node: "shore")) }, origin: "shore")
    }

    /// Random batches of inserts, updates of random rows and offboardings of certificates followed
    /// by later events for the same rows (tables interleaved at random, each row's events in
    /// order), applied batch after batch on three nodes: in 2-row slices, in one slice, and one event
    /// at a time.
    func testSlicesOfAnySizeEndInTheSameRows() async throws {
        let (configuration, small) = try await installedNode()
        let (_, whole) = try await installedNode()
        let (_, oneByOne) = try await installedNode()
        let single = try await makeApplier(configuration, oneByOne)
        var sliced = try await makeApplier(configuration, small)
        sliced.chunkSize = 2
        let unsliced = try await makeApplier(configuration, whole)
        var rng = SplitMix64(seed: 2026)
        let vessel = UUID(), type = UUID()
        let seafarers = (0..<8).map { _ in UUID() }
        let certificates = (0..<12).map { _ in UUID() }
        var clock: Int64 = 10
        var present: Set<UUID> = []
        for round in 0..<5 {
            var events: [ChangeEvent] = []
            if round == 0 {
                events.append(change("vessel", vessel, ["code": .string("aurora"), "name": .string("MV Aurora")], clock: 1))
                events.append(change("certificate_type", type, ["code": .string("BST"), "title": .string("Basic")], clock: 1))
                for (i, id) in seafarers.enumerated() {
                    events.append(change("seafarer", id, ["full_name": .string("Sailor \(i)"), "vessel_code": .string("aurora"), "rank": .string("Cadet")], clock: 2))
                }
            }
            for _ in 0..<60 {
                clock += Int64.random(in: 1...2, using: &rng)  // one node never reuses a clock
                let certificate = certificates.randomElement(using: &rng)!
                switch Int.random(in: 0..<5, using: &rng) {
                case 0:
                    events.append(change("seafarer", seafarers.randomElement(using: &rng)!, ["rank": .string("Rank \(clock)")], clock: clock))
                case 1 where present.contains(certificate):
                    // The row leaves; it comes back only with a full baseline, as the saga sends.
                    events.append(ChangeEvent(table: "certificate", rowID: certificate, fields: [:], origin: "shore", offboard: true))
                    present.remove(certificate)
                case 2 where present.contains(certificate):
                    events.append(change("certificate", certificate, ["remarks": .string("remark \(clock)")], clock: clock))
                default:
                    events.append(change("certificate", certificate, [
                        "seafarer_id": .string(seafarers.randomElement(using: &rng)!.uuidString),
                        "certificate_type_id": .string(type.uuidString), "number": .string("C-\(clock)"),
                    ], clock: clock))
                    present.insert(certificate)
                }
            }
            let a = try await sliced.apply(events, from: "shore", cursor: Int64(round + 1))
            let b = try await unsliced.apply(events, from: "shore", cursor: Int64(round + 1))
            // The reference: every event a batch of its own, in order.
            for event in events { try await single.apply([event], from: "shore") }
            XCTAssertEqual(a.offboardedRows, b.offboardedRows, "round \(round)")
            XCTAssertEqual(a.appliedRows + a.unchangedRows, b.appliedRows + b.unchangedRows, "round \(round)")
            let digest = """
                SELECT coalesce(string_agg(r::text, '|' ORDER BY r::text), '') FROM (
                  SELECT id, full_name, rank, sync_version, sync_clock::text AS c FROM seafarer UNION ALL
                  SELECT id, coalesce(number, '') || '/' || coalesce(remarks, ''), seafarer_id::text, sync_version, sync_clock::text FROM certificate) r
                """
            let left: String = try await small.scalar(digest)
            let right: String = try await whole.scalar(digest)
            let reference: String = try await oneByOne.scalar(digest)
            XCTAssertEqual(left, reference, "round \(round): 2-row slices")
            XCTAssertEqual(right, reference, "round \(round): one slice")
            let dead: Int64 = try await small.scalar("SELECT count(*) FROM fleetsync.dead_letter")
            XCTAssertEqual(dead, 0, "round \(round)")
        }
        let rows: Int64 = try await small.scalar("SELECT count(*) FROM certificate")
        XCTAssertGreaterThan(rows, 0, "some certificates remain after offboardings")
    }
}
