import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTestSupport
import FleetSyncTransport
import FleetSyncVessel
import Foundation
import PostgresNIO
import XCTest

/// Issue 18: `fleetsync verify [--repair]` proves a vessel and the shore hold the same partition.
final class VerifyTests: DatabaseTestCase {
    func verify(_ fleet: Fleet, _ arguments: [String] = []) throws -> (status: Int32, json: [String: JSONValue], error: String) {
        let result = try FleetSyncBinary.run(["verify", "--config", fleet.vessels[0].configPath, "--json"] + arguments)
        let json = (try? JSONParser.parse(result.output.trimmingCharacters(in: .whitespacesAndNewlines)))?.objectValue ?? [:]
        return (result.status, json, result.error + result.output)
    }

    /// Divergence written on the vessel with capture bypassed (values changed, a row deleted, a
    /// row inserted: 7 rows of a 20,000-row partition) is found exactly, repaired through the
    /// apply path, and a second verify finds nothing.
    func testVerifyFindsExactlyTheInjectedDifferencesAndRepairMakesBothSidesEqual() async throws {
        // A 20,000-row partition in CI; 1,000,000 with FLEETSYNC_FULL_SIZE=1 (scripts/catch-up-benchmark.sh).
        let fleet = try await Fleet.make(vessels: ["aurora"], schema: try CatchUpTests.preexistingSchema(crew: CatchUpTests.fullSize ? 1_000_000 : 20_000))
        let server = try fleet.serve()
        defer { server.stop() }
        XCTAssertEqual(try fleet.sync(fleet.vessels[0]).status, 0)
        let vessel = try await connect(fleet.vessels[0].url)
        let partition: Int64 = try await vessel.scalar("SELECT (SELECT count(*) FROM seafarer) + (SELECT count(*) FROM certificate)")
        XCTAssertGreaterThanOrEqual(partition, 19_990)

        let clean = try verify(fleet)
        XCTAssertEqual(clean.status, 0, clean.error)
        XCTAssertEqual(clean.json["differing"], .number("0"), clean.error)
        XCTAssertEqual(clean.json["round_trips"], .number("1"), "equal partitions take one round trip")
        print("verify of \(partition) rows with no difference: \(clean.json["bytes"] ?? .null) bytes, \(clean.json["round_trips"] ?? .null) round trip(s)")

        // Seven rows changed behind capture's back.
        let ids: [UUID] = try await vessel.rows("SELECT id FROM seafarer ORDER BY md5(id::text) LIMIT 5").map { try $0.decode(UUID.self) }
        guard ids.count == 5 else { return XCTFail("the vessel holds too few seafarers: \(ids.count)") }
        let deleted: UUID = try await vessel.scalar("SELECT id FROM certificate ORDER BY md5(id::text) LIMIT 1")
        try Fixtures.runScript("""
            SET fleetsync.applying = 'on';
            UPDATE seafarer SET full_name = 'renamed by hand' WHERE id IN ('\(ids[0])', '\(ids[1])');
            UPDATE seafarer SET notes = 'shared note by hand' WHERE id = '\(ids[2])';
            UPDATE seafarer SET rank = 'Captain' WHERE id = '\(ids[3])';
            UPDATE seafarer SET contact_number = '+47 by hand' WHERE id = '\(ids[4])';
            DELETE FROM certificate WHERE id = '\(deleted)';
            INSERT INTO seafarer (id, vessel_code, full_name) VALUES ('018f0000-0000-7000-8000-000000000007', 'aurora', 'stowaway');
            """, url: fleet.vessels[0].url)
        let found = try verify(fleet)
        XCTAssertEqual(found.status, 5, found.error)
        let differences = found.json["differences"]?.arrayValue?.compactMap(\.objectValue) ?? []
        let expected = Set(ids.map { "seafarer \($0.lowercasedText) values_differ" } + ["certificate \(deleted.lowercasedText) missing_on_vessel",
                                                                                          "seafarer 018f0000-0000-7000-8000-000000000007 missing_on_shore"])
        XCTAssertEqual(Set(differences.map { "\($0["table"]?.stringValue ?? "") \($0["id"]?.stringValue ?? "") \($0["kind"]?.stringValue ?? "")" }), expected, found.error)
        print("verify of \(partition) rows with 7 differing: \(found.json["bytes"] ?? .null) bytes, \(found.json["round_trips"] ?? .null) round trip(s)")

        let repaired = try verify(fleet, ["--repair"])
        XCTAssertEqual(repaired.status, 0, repaired.error)
        XCTAssertEqual(repaired.json["repaired"], .number("7"), repaired.error)
        let logged: Int64 = try await vessel.scalar("SELECT count(*) FROM fleetsync.verify_log WHERE kind LIKE 'repair_%'")
        XCTAssertEqual(logged, 7, "each repair is logged")
        // The vessel-owned value kept on the vessel travels to the shore with the next exchange.
        XCTAssertEqual(try fleet.sync(fleet.vessels[0]).status, 0)
        let second = try verify(fleet)
        XCTAssertEqual(second.status, 0, second.error)
        XCTAssertEqual(second.json["differing"], .number("0"), second.error)
        let shore = try await connect(fleet.shore.url)
        let contact: String? = try await shore.scalar("SELECT contact_number FROM seafarer WHERE id = '\(ids[4])'")
        XCTAssertEqual(contact, "+47 by hand", "the vessel owns contact_number: on tied clocks its value wins")
        let name: String = try await vessel.scalar("SELECT full_name FROM seafarer WHERE id = '\(ids[0])'")
        XCTAssertNotEqual(name, "renamed by hand", "the shore owns full_name: on tied clocks its value wins")
        let status = try FleetSyncBinary.run(["status", "--config", fleet.vessels[0].configPath])
        XCTAssertTrue(status.output.contains("last verify:") && status.output.contains("same as the shore"), status.output)
    }

    /// Digest requests that do not fit the protocol are refused with a clear error, counted,
    /// and nothing is read; a fetch never reaches outside the partition.
    func testRequestsThatDoNotFitTheProtocolAreRefused() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora", "borealis"])
        let server = try fleet.serve()
        defer { server.stop() }
        try Fixtures.runScript("""
            INSERT INTO vessel (code, name) VALUES ('aurora', 'A'), ('borealis', 'B');
            INSERT INTO seafarer (id, vessel_code, full_name) VALUES ('018f0000-0000-7000-8000-0000000000b0', 'borealis', 'on borealis');
            """, url: fleet.shore.url)
        let transport = try HTTPVerifyTransport(shoreURL: "http://127.0.0.1:\(fleet.httpPort)")
        defer { Task { await transport.shutdown() } }
        // Unsealed, without a token, as curl would send it: refused before anything is read.
        do {
            _ = try await transport.post(.object(["vessel": .string("aurora"), "op": .string("summaries"), "ranges": .array([])]))
            XCTFail("an unsealed verify message was answered")
        } catch {
            XCTAssertTrue("\(error)".contains("only sealed verify messages"), "\(error)")
        }
        // Sealed with aurora's token, as its verify sends them.
        let aurora = fleet.vessels[0]
        let vesselDB = try await connect(aurora.url)
        transport.sealer = { body in
            try await VesselChannel(configuration: aurora.configuration, session: vesselDB, transport: transport).send(body, limits: WireLimits()).answer
        }
        func refused(_ message: JSONValue, _ words: String) async {
            do {
                _ = try await transport.post(message)
                XCTFail("accepted: \(message.serialized)")
            } catch {
                XCTAssertTrue("\(error)".contains(words), "\(error)")
            }
        }
        func ranges(_ pairs: [(String, String)]) -> JSONValue { .array(pairs.map { .array([.string($0.0), .string($0.1)]) }) }
        await refused(.object(["vessel": .string("aurora"), "op": .string("summaries"), "ranges": ranges([("seafarer", "1"), ("seafarer", "0")])]), "out of order")
        await refused(.object(["vessel": .string("aurora"), "op": .string("summaries"), "ranges": ranges([("seafarer", "1"), ("seafarer", "1a")])]), "overlap")
        await refused(.object(["vessel": .string("aurora"), "op": .string("rows"), "ranges": ranges((0..<5_000).map { ("seafarer", String(format: "%04x", $0)) })]), "at most")
        await refused(.object(["vessel": .string("aurora"), "op": .string("summaries"), "ranges": ranges([("pg_authid", "")])]), "not synced")
        await refused(.object(["vessel": .string("aurora"), "op": .string("summaries"), "ranges": ranges([("seafarer", "xyz")])]), "hexadecimal")
        await refused(.object(["vessel": .string("borealis"), "op": .string("summaries"), "ranges": ranges([("seafarer", "")])]), "token is vessel aurora's")
        await refused(.object(["vessel": .string("aurora"), "op": .string("drop")]), "op")
        let shore = try await connect(fleet.shore.url)
        let counted: Int64 = try await shore.scalar("SELECT count(*) FROM fleetsync.verify_log WHERE kind = 'refused_request'")
        XCTAssertEqual(counted, 7)
        // Borealis's row is outside aurora's partition: a fetch leaves it out.
        let fetched = try await transport.post(.object(["vessel": .string("aurora"), "op": .string("fetch"), "table": .string("seafarer"),
                                                        "ids": .array([.string("018f0000-0000-7000-8000-0000000000b0")])]))
        XCTAssertEqual(fetched["events"], .array([]))
        let summaries = try await transport.post(.object(["vessel": .string("aurora"), "op": .string("summaries"), "ranges": ranges([("seafarer", "")])]))
        XCTAssertEqual(summaries["summaries"], .array([.array([.number("0"), .string("")])]), "aurora's partition holds no seafarer")
    }
}
