import FleetSyncCore
import FleetSyncTestSupport
import Foundation
import XCTest
@testable import FleetSyncPostgres

/// Rows that existed before `init` get their clocks and owner as if the shore had just written
/// them, so that a vessel's creation of a row with the same id does not win against them
/// (issue 15, item 7).
final class OnboardingClockTests: DatabaseTestCase {
    /// A shore database holding rows written before FleetSync was installed.
    private func preexistingShore(seafarers: Int = 1) async throws -> (FleetSyncConfiguration, DatabaseSession, [String]) {
        let url = try await Fixtures.database()
        try Fixtures.runScript("""
            INSERT INTO vessel (id, code, name) VALUES ('0193b000-0000-7000-8000-000000000001', 'aurora', 'MV Aurora'), ('0193b000-0000-7000-8000-000000000002', 'borealis', 'MV Borealis');
            INSERT INTO seafarer (id, vessel_code, full_name, rank)
              SELECT ('0193b000-0000-7000-8000-1' || lpad(i::text, 11, '0'))::uuid, 'aurora', 'Crew ' || i, 'Master' FROM generate_series(1, \(seafarers)) i;
            """, url: url)
        let configuration = Fixtures.configuration(role: .shore, nodeID: "shore", url: url, tables: Fixtures.exampleTables())
        let db = try await connect(url)
        var installer = Installer(configuration: configuration)
        installer.clockBatchRows = 10
        let messages = Messages()
        installer.progress = { messages.append($0) }
        let report = try await installer.install(on: db)
        XCTAssertEqual(report.clockedRows, ["vessel": 2, "seafarer": seafarers])
        return (configuration, db, messages.all)
    }

    func testRowsThatExistedBeforeInitGetTheShoresClocksInBatches() async throws {
        let (configuration, db, progress) = try await preexistingShore(seafarers: 25)
        let clockless: Int64 = try await db.scalar("SELECT (SELECT count(*) FROM vessel WHERE sync_clock = '{}') + (SELECT count(*) FROM seafarer WHERE sync_clock = '{}')")
        XCTAssertEqual(clockless, 0)
        // Every column carries a clock: the shore's write for what it may write, the creation
        // clock for the vessel's column, as the insert trigger gives them.
        let clocks = try JSONParser.parse(try await db.scalar("SELECT sync_clock::text FROM seafarer ORDER BY id LIMIT 1") as String).objectValue!
        XCTAssertEqual(Set(clocks.keys), ["vessel_code", "full_name", "rank", "contact_number", "notes"])
        let version: Int64 = try await db.scalar("SELECT sync_version FROM seafarer ORDER BY id LIMIT 1")
        XCTAssertGreaterThan(version, 0)
        XCTAssertEqual(clocks["rank"].flatMap(FieldClock.init(json:)), FieldClock(counter: version, node: "shore"))
        XCTAssertEqual(clocks["notes"].flatMap(FieldClock.init(json:)), FieldClock(counter: version, node: "shore"))
        XCTAssertEqual(clocks["contact_number"].flatMap(FieldClock.init(json:)), FieldClock(counter: 0, node: "shore"))
        // In batches of 10 rows with a fresh clock each, progress told for the large table only.
        let versions: Int64 = try await db.scalar("SELECT count(DISTINCT sync_version) FROM seafarer")
        XCTAssertEqual(versions, 3)
        XCTAssertEqual(progress.filter { $0.hasPrefix("seafarer:") }.count, 4, "\(progress)")
        XCTAssertTrue(progress.contains("seafarer: 25 of 25 row(s) given clocks"), "\(progress)")
        XCTAssertFalse(progress.contains { $0.hasPrefix("vessel:") }, "\(progress)")
        // Later local writes take later clocks; nothing was captured; init again changes nothing.
        let lamport: Int64 = try await db.scalar("SELECT last_value FROM fleetsync.lamport")
        let highest: Int64 = try await db.scalar("SELECT max(sync_version) FROM seafarer")
        XCTAssertGreaterThanOrEqual(lamport, highest)
        let captured: Int64 = try await db.scalar("SELECT count(*) FROM fleetsync.capture_log")
        XCTAssertEqual(captured, 0)
        let before: String = try await db.scalar("SELECT string_agg(sync_clock::text, '|' ORDER BY id) FROM seafarer")
        let again = try await Installer(configuration: configuration).install(on: db)
        XCTAssertEqual(again.clockedRows, [:])
        let after: String = try await db.scalar("SELECT string_agg(sync_clock::text, '|' ORDER BY id) FROM seafarer")
        XCTAssertEqual(before, after)
    }

    func testAVesselsCreationOfAPreexistingRowDoesNotOverwriteTheShoresFields() async throws {
        let (configuration, db, _) = try await preexistingShore()
        let applier = try await makeApplier(configuration, db)
        let crew = UUID(uuidString: "0193b000-0000-7000-8000-100000000001")!
        let ship = UUID(uuidString: "0193b000-0000-7000-8000-000000000001")!
        let creation = FieldClock(counter: 0, node: "aurora")
        let report = try await applier.apply([
            // aurora "creates" its crew row again, moving it to borealis and changing the rank.
            ChangeEvent(table: "seafarer", rowID: crew, fields: [
                "vessel_code": FieldChange(value: .string("borealis"), clock: creation),
                "full_name": FieldChange(value: .string("Someone else"), clock: creation),
                "rank": FieldChange(value: .string("Cook"), clock: creation),
                "contact_number": FieldChange(value: .string("+47 1"), clock: FieldClock(counter: 3, node: "aurora")),
            ], origin: "aurora"),
            // and "creates" a broadcast row the whole fleet holds.
            ChangeEvent(table: "vessel", rowID: ship, fields: [
                "code": FieldChange(value: .string("aurora"), clock: creation),
                "name": FieldChange(value: .string("Renamed by aurora"), clock: creation),
            ], origin: "aurora"),
        ], from: "aurora", cursor: 2, routes: [crew: "aurora"])
        XCTAssertEqual(report.deadLettered, 0)
        let seafarer: String = try await db.scalar("SELECT format('%s|%s|%s|%s', vessel_code, full_name, rank, contact_number) FROM seafarer")
        XCTAssertEqual(seafarer, "aurora|Crew 1|Master|+47 1", "only the vessel's own field applies")
        let name: String = try await db.scalar("SELECT name FROM vessel WHERE id = '\(ship)'")
        XCTAssertEqual(name, "MV Aurora")
    }
}

/// Progress messages collected from the installer's callback.
private final class Messages: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    func append(_ message: String) { lock.withLock { items.append(message) } }
    var all: [String] { lock.withLock { items } }
}
