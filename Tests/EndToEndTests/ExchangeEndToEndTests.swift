import FleetSyncCore
import FleetSyncPostgres
import FleetSyncTestSupport
import FleetSyncTransport
import FleetSyncVessel
import Foundation
import XCTest

/// One shore and two vessels, each on its own PostgreSQL cluster, with real `fleetsync serve`
/// and `fleetsync sync --once` processes over HTTP on loopback.
final class ExchangeEndToEndTests: DatabaseTestCase {
    /// The shore's rows of `vessel`'s partition, and the vessel's rows, in one comparable text.
    static func partition(_ vessel: String?) -> String {
        let seafarers = vessel.map { "WHERE vessel_code = '\($0)'" } ?? ""
        let certificates = vessel.map { "WHERE seafarer_id IN (SELECT id FROM seafarer WHERE vessel_code = '\($0)')" } ?? ""
        return """
            SELECT coalesce(string_agg(r, E'\\n' ORDER BY r), '') FROM (
              SELECT format('vessel %s %s %s %s %s', id, code, name, is_deleted, sync_clock) AS r FROM vessel UNION ALL
              SELECT format('type %s %s %s %s', id, code, title, sync_clock) FROM certificate_type UNION ALL
              SELECT format('seafarer %s %s %s %s %s %s %s %s', id, vessel_code, full_name, rank, contact_number, notes, is_deleted, sync_clock) FROM seafarer \(seafarers) UNION ALL
              SELECT format('certificate %s %s %s %s %s %s', id, seafarer_id, number, status, is_deleted, sync_clock) FROM certificate \(certificates)) p
            """
    }

    func assertConverged(_ fleet: Fleet, _ shore: DatabaseSession, file: StaticString = #filePath, line: UInt = #line) async throws {
        for vessel in fleet.vessels {
            let db = try await connect(vessel.url)
            let expected: String = try await shore.scalar(Self.partition(vessel.id))
            let actual: String = try await db.scalar(Self.partition(nil))
            XCTAssertEqual(actual, expected, "vessel \(vessel.id) does not hold exactly its partition", file: file, line: line)
        }
    }

    /// The shore's id is "hq", not "shore": vessels must accept its writes to the shore-owned
    /// fields (most of the example schema) by the id its clocks name.
    func testOfflineEditsOnThreeNodesConverge() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora", "borealis"], shoreID: "hq")
        let server = try fleet.serve()
        defer { server.stop() }
        let shore = try await connect(fleet.shore.url)
        let aurora = try await connect(fleet.vessels[0].url)
        let borealis = try await connect(fleet.vessels[1].url)
        try Fixtures.runScript("""
            INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora'), ('borealis', 'MV Borealis');
            INSERT INTO certificate_type (code, title) VALUES ('BST', 'Basic safety'), ('MED', 'Medical');
            INSERT INTO seafarer (vessel_code, full_name, rank, notes) VALUES ('aurora', 'Ana', 'Officer', 'n0'), ('aurora', 'Cy', 'Cook', NULL), ('borealis', 'Bo', 'Master', NULL);
            INSERT INTO certificate (seafarer_id, certificate_type_id, number) SELECT s.id, t.id, s.full_name || '-' || t.code FROM seafarer s, certificate_type t;
            """, url: fleet.shore.url)
        for vessel in fleet.vessels { XCTAssertEqual(try fleet.sync(vessel).status, 0) }
        try await assertConverged(fleet, shore)

        // Offline: every node edits.
        try Fixtures.runScript("""
            UPDATE seafarer SET rank = 'Chief Officer', notes = 'shore note' WHERE full_name = 'Ana';
            DELETE FROM certificate WHERE number = 'Cy-MED';
            UPDATE vessel SET name = 'MV Borealis II' WHERE code = 'borealis';
            """, url: fleet.shore.url)
        try Fixtures.runScript("""
            UPDATE seafarer SET contact_number = '+351 1', notes = 'aurora note' WHERE full_name = 'Ana';
            -- a new crew member and her certificate, captured child after parent, sent in one batch
            INSERT INTO seafarer (id, vessel_code, full_name) VALUES ('0193a000-0000-7000-8000-000000000001', 'aurora', 'Dee');
            INSERT INTO certificate (seafarer_id, certificate_type_id, number) SELECT '0193a000-0000-7000-8000-000000000001', id, 'Dee-BST' FROM certificate_type WHERE code = 'BST';
            UPDATE certificate SET remarks = 'renewal due' WHERE number = 'Ana-BST';
            DELETE FROM certificate WHERE number = 'Ana-MED';
            """, url: fleet.vessels[0].url)
        try Fixtures.runScript("UPDATE seafarer SET contact_number = '+47 2' WHERE full_name = 'Bo';", url: fleet.vessels[1].url)

        for vessel in fleet.vessels + fleet.vessels { XCTAssertEqual(try fleet.sync(vessel).status, 0) }
        try await assertConverged(fleet, shore)
        let ana = try await aurora.rows("SELECT rank, contact_number, notes FROM seafarer WHERE full_name = 'Ana'")
        let (rank, contact, notes) = try ana[0].decode((String, String, String).self)
        XCTAssertEqual(rank, "Chief Officer")
        XCTAssertEqual(contact, "+351 1")
        let writer: String = try await shore.scalar("SELECT sync_clock->'notes'->>1 FROM seafarer WHERE full_name = 'Ana'")
        XCTAssertEqual(notes, writer == "hq" ? "shore note" : "aurora note", "the write with the higher clock wins the shared field")
        let dee: Int64 = try await shore.scalar("SELECT count(*) FROM certificate WHERE number = 'Dee-BST'")
        XCTAssertEqual(dee, 1)
        let tombstone: Bool = try await shore.scalar("SELECT is_deleted FROM certificate WHERE number = 'Ana-MED'")
        XCTAssertTrue(tombstone)
        let leaked: Int64 = try await borealis.scalar("SELECT count(*) FROM seafarer WHERE vessel_code <> 'borealis'")
        XCTAssertEqual(leaked, 0, "a vessel never receives another vessel's rows")
        let foreignCertificates: Int64 = try await borealis.scalar("SELECT count(*) FROM certificate")
        XCTAssertEqual(foreignCertificates, 2, "only Bo's certificates")
        let conflicts: Int64 = try await shore.scalar("SELECT count(*) FROM fleetsync.conflict_log WHERE field = 'notes'")
        XCTAssertEqual(conflicts, 1, "the concurrent shared-field edit is recorded")
        let pending: Int64 = try await aurora.scalar("SELECT (SELECT count(*) FROM fleetsync.outbox) + (SELECT count(*) FROM fleetsync.capture_log)")
        XCTAssertEqual(pending, 0, "acknowledged events left the vessel's outbox")
    }

    func testCrewTransferSaga() async throws {
        let fleet = try await Fleet.make(vessels: ["aurora", "borealis"])
        let server = try fleet.serve()
        defer { server.stop() }
        let shore = try await connect(fleet.shore.url)
        try Fixtures.runScript("""
            INSERT INTO vessel (code, name) VALUES ('aurora', 'A'), ('borealis', 'B');
            INSERT INTO certificate_type (code, title) VALUES ('BST', 'Basic safety'), ('MED', 'Medical');
            INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'Ana');
            INSERT INTO certificate (seafarer_id, certificate_type_id, number) SELECT s.id, t.id, t.code FROM seafarer s, certificate_type t;
            """, url: fleet.shore.url)
        for vessel in fleet.vessels { XCTAssertEqual(try fleet.sync(vessel).status, 0) }
        // The vessel adds its own data to Ana's record before the transfer.
        try Fixtures.runScript("UPDATE seafarer SET contact_number = '+1 555' WHERE full_name = 'Ana';", url: fleet.vessels[0].url)
        XCTAssertEqual(try fleet.sync(fleet.vessels[0]).status, 0)
        let before: String = try await shore.scalar(Self.partition(nil))
        try Fixtures.runScript("UPDATE seafarer SET vessel_code = 'borealis' WHERE full_name = 'Ana';", url: fleet.shore.url)
        for vessel in fleet.vessels { XCTAssertEqual(try fleet.sync(vessel).status, 0) }
        let aurora = try await connect(fleet.vessels[0].url)
        let borealis = try await connect(fleet.vessels[1].url)
        let left: Int64 = try await aurora.scalar("SELECT (SELECT count(*) FROM seafarer) + (SELECT count(*) FROM certificate)")
        XCTAssertEqual(left, 0, "the old vessel keeps no live copy")
        let arrived = try await borealis.rows("SELECT contact_number, (SELECT count(*) FROM certificate) FROM seafarer WHERE full_name = 'Ana'")
        let (contact, certificates) = try arrived[0].decode((String, Int64).self)
        XCTAssertEqual(contact, "+1 555", "the baseline carries the vessel-owned field")
        XCTAssertEqual(certificates, 2)
        try await assertConverged(fleet, shore)
        let after: String = try await shore.scalar(Self.partition(nil))
        func normalized(_ text: String) -> String {
            text.replacingOccurrences(of: "borealis", with: "aurora")
                .replacingOccurrences(of: #""vessel_code": \[\d+, "shore"\]"#, with: "", options: .regularExpression)
        }
        XCTAssertEqual(normalized(after), normalized(before), "the shore's rows are unchanged but for the routing key")
        let vesselRows: Int64 = try await shore.scalar("SELECT count(*) FROM seafarer")
        XCTAssertEqual(vesselRows, 1)
    }

    func testExchangeOverTLSWithHTTP2() async throws {
        var fleet = try await Fleet.make(vessels: ["aurora"])
        let directory = NSTemporaryDirectory() + "fleetsync-tls-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Shell.run(["/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                       "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", directory + "/key.pem", "-out", directory + "/cert.pem"])
        let shoreText = try String(contentsOfFile: fleet.shore.configPath, encoding: .utf8)
            .replacingOccurrences(of: "retention_days = 30", with: "retention_days = 30\ntls_certificate = \"\(directory)/cert.pem\"\ntls_key = \"\(directory)/key.pem\"")
        try shoreText.write(toFile: fleet.shore.configPath, atomically: true, encoding: .utf8)
        let vesselText = try String(contentsOfFile: fleet.vessels[0].configPath, encoding: .utf8)
            .replacingOccurrences(of: "http://127.0.0.1:\(fleet.httpPort)", with: "https://127.0.0.1:\(fleet.httpPort)")
            .replacingOccurrences(of: "interval_seconds = 30", with: "interval_seconds = 30\ntls_ca = \"\(directory)/cert.pem\"")
        try vesselText.write(toFile: fleet.vessels[0].configPath, atomically: true, encoding: .utf8)
        fleet.vessels[0].configuration = try ConfigurationLoader.load(text: vesselText)
        let server = try fleet.serve()
        defer { server.stop() }
        let version = try Shell.run(["/usr/bin/curl", "-s", "--http2", "--cacert", directory + "/cert.pem", "-o", "/dev/null", "-w", "%{http_version}", "https://127.0.0.1:\(fleet.httpPort)/health"])
        XCTAssertEqual(version, "2", "the shore negotiates HTTP/2 over TLS")
        let http1 = try Shell.run(["/usr/bin/curl", "-s", "--http1.1", "--cacert", directory + "/cert.pem", "-o", "/dev/null", "-w", "%{http_version}", "https://127.0.0.1:\(fleet.httpPort)/health"])
        XCTAssertEqual(http1, "1.1", "and still serves HTTP/1.1 over TLS")
        try Fixtures.runScript("INSERT INTO vessel (code, name) VALUES ('aurora', 'A');", url: fleet.shore.url)
        let result = try fleet.sync(fleet.vessels[0])
        XCTAssertEqual(result.status, 0, result.error)
        let shore = try await connect(fleet.shore.url)
        try await assertConverged(fleet, shore)
        // A vessel that does not trust the certificate is refused by TLS, not silently served.
        let untrusting = try FleetSyncBinary.writeConfiguration(vesselText.replacingOccurrences(of: "tls_ca = \"\(directory)/cert.pem\"", with: ""))
        let refused = try FleetSyncBinary.run(["sync", "--once", "--config", untrusting])
        XCTAssertNotEqual(refused.status, 0)
    }

    /// The router with three vessels: each receives exactly its partition and the broadcast rows.
    func testThreeVesselsEachReceiveOnlyTheirPartition() async throws {
        let ids = ["aurora", "borealis", "cassiopeia"]
        let fleet = try await Fleet.make(vessels: ids)
        let server = try fleet.serve()
        defer { server.stop() }
        let shore = try await connect(fleet.shore.url)
        var script = "INSERT INTO certificate_type (code, title) VALUES ('BST', 'Basic safety');\n"
        for id in ids {
            script += "INSERT INTO vessel (code, name) VALUES ('\(id)', 'MV \(id)');\n"
            for n in 1...3 { script += "INSERT INTO seafarer (vessel_code, full_name) VALUES ('\(id)', '\(id) crew \(n)');\n" }
        }
        script += "INSERT INTO seafarer (vessel_code, full_name) VALUES (NULL, 'ashore');\n"
        script += "INSERT INTO certificate (seafarer_id, certificate_type_id, number) SELECT s.id, t.id, s.full_name FROM seafarer s, certificate_type t;\n"
        try Fixtures.runScript(script, url: fleet.shore.url)
        for vessel in fleet.vessels { XCTAssertEqual(try fleet.sync(vessel).status, 0) }
        try await assertConverged(fleet, shore)
        for vessel in fleet.vessels {
            let db = try await connect(vessel.url)
            let foreign: Int64 = try await db.scalar("""
                SELECT (SELECT count(*) FROM seafarer WHERE vessel_code IS DISTINCT FROM '\(vessel.id)')
                     + (SELECT count(*) FROM certificate WHERE number NOT LIKE '\(vessel.id) crew %')
                """)
            XCTAssertEqual(foreign, 0, "\(vessel.id) received rows of another partition")
            let own: Int64 = try await db.scalar("SELECT (SELECT count(*) FROM seafarer) + (SELECT count(*) FROM certificate) + (SELECT count(*) FROM vessel)")
            XCTAssertEqual(own, 3 + 3 + 3, "\(vessel.id): its 3 crew, their 3 certificates and the 3 broadcast vessels")
        }
    }
}
