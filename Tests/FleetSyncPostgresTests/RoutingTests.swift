import FleetSyncCore
import FleetSyncTestSupport
import Foundation
import XCTest
@testable import FleetSyncPostgres

/// The shore's routing function and transfer saga over a chain of parent routes.
final class RoutingTests: DatabaseTestCase {
    static let endorsement = """
        CREATE TABLE endorsement (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
          certificate_id uuid NOT NULL REFERENCES certificate (id), note text);
        """

    func tables() -> [TableConfiguration] {
        Fixtures.exampleTables() + [TableConfiguration(name: "endorsement", route: .parent(table: "certificate", via: "certificate_id"))]
    }

    func testRowsFollowTheirParentsOverSeveralLevels() async throws {
        let (configuration, shore) = try await installedNode(role: .shore, nodeID: "shore", tables: tables(), schema: Self.endorsement)
        try Fixtures.runScript("""
            INSERT INTO vessel (code, name) VALUES ('aurora', 'A'), ('borealis', 'B');
            INSERT INTO certificate_type (code, title) VALUES ('BST', 'b');
            INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'Ana');
            INSERT INTO certificate (seafarer_id, certificate_type_id, number) SELECT s.id, t.id, 'C1' FROM seafarer s, certificate_type t;
            INSERT INTO endorsement (certificate_id, note) SELECT id, 'tanker' FROM certificate;
            """, url: configuration.databaseURL)
        let route: String = try await shore.scalar("SELECT fleetsync.route_event('endorsement', id) FROM endorsement")
        XCTAssertEqual(route, "aurora", "a grandchild follows its grandparent's vessel")
        let broadcast: String = try await shore.scalar("SELECT fleetsync.route_event('certificate_type', id) FROM certificate_type")
        XCTAssertEqual(broadcast, "*")
        _ = try await OutboxReader(session: shore).sequence()
        let routed: String = try await shore.scalar("SELECT string_agg(table_name || '=' || coalesce(vessel, '-'), ',' ORDER BY pos) FROM fleetsync.outbox")
        XCTAssertEqual(routed, "vessel=*,vessel=*,certificate_type=*,seafarer=aurora,certificate=aurora,endorsement=aurora")

        // The transfer saga reaches the grandchild too: offboard children first, baseline parents first.
        try await shore.execute("UPDATE seafarer SET vessel_code = 'borealis'")
        _ = try await OutboxReader(session: shore).sequence()
        let saga: String = try await shore.scalar("SELECT string_agg(op::text || ':' || table_name || '>' || vessel, ',' ORDER BY pos) FROM fleetsync.outbox WHERE op IN ('O', 'B')")
        XCTAssertEqual(saga, "O:endorsement>aurora,O:certificate>aurora,O:seafarer>aurora,B:seafarer>borealis,B:certificate>borealis,B:endorsement>borealis")
        let baseline: String = try await shore.scalar("SELECT delta->>'note' FROM fleetsync.outbox WHERE op = 'B' AND table_name = 'endorsement'")
        XCTAssertEqual(baseline, "tanker", "the baseline carries the full row")
        // The update that moved the row does not travel ahead of the baseline as a partial row.
        let moveEvents: Int64 = try await shore.scalar("SELECT count(*) FROM fleetsync.outbox WHERE op = 'U' AND table_name = 'seafarer'")
        XCTAssertEqual(moveEvents, 0)
        let version: Int64 = try await shore.scalar("SELECT sync_version FROM seafarer")
        let baselineVersion: Int64 = try await shore.scalar("SELECT version FROM fleetsync.outbox WHERE op = 'B' AND table_name = 'seafarer'")
        XCTAssertEqual(baselineVersion, version, "the baseline carries the moved row's version")
    }

    /// A row routed through a parent that is moved to a parent on another vessel is transferred
    /// with the rows routed through it; moved to a parent on the same vessel, it is not.
    func testRowMovedToAParentOnAnotherVesselIsTransferred() async throws {
        let (configuration, shore) = try await installedNode(role: .shore, nodeID: "shore", tables: tables(), schema: Self.endorsement)
        try Fixtures.runScript("""
            INSERT INTO vessel (code, name) VALUES ('aurora', 'A'), ('borealis', 'B');
            INSERT INTO certificate_type (code, title) VALUES ('BST', 'b');
            INSERT INTO seafarer (vessel_code, full_name) VALUES ('aurora', 'Ana'), ('aurora', 'Cy'), ('borealis', 'Bo');
            INSERT INTO certificate (seafarer_id, certificate_type_id, number) SELECT s.id, t.id, 'C1' FROM seafarer s, certificate_type t WHERE s.full_name = 'Ana';
            INSERT INTO endorsement (certificate_id, note) SELECT id, 'tanker' FROM certificate;
            """, url: configuration.databaseURL)
        func saga() async throws -> String {
            _ = try await OutboxReader(session: shore).sequence()
            return try await shore.scalar("SELECT coalesce(string_agg(op::text || ':' || table_name || '>' || vessel, ',' ORDER BY pos), '') FROM fleetsync.outbox WHERE op IN ('O', 'B')")
        }
        try await shore.execute("UPDATE certificate SET seafarer_id = (SELECT id FROM seafarer WHERE full_name = 'Cy')")
        let sameVessel = try await saga()
        XCTAssertEqual(sameVessel, "", "another parent on the same vessel: no transfer")
        try await shore.execute("UPDATE certificate SET seafarer_id = (SELECT id FROM seafarer WHERE full_name = 'Bo')")
        let moved = try await saga()
        XCTAssertEqual(moved, "O:endorsement>aurora,O:certificate>aurora,B:certificate>borealis,B:endorsement>borealis")
        let baseline: String = try await shore.scalar("SELECT delta->>'number' FROM fleetsync.outbox WHERE op = 'B' AND table_name = 'certificate'")
        XCTAssertEqual(baseline, "C1", "the baseline carries the full row")
    }

    /// A table that is no longer routed by a column loses its transfer trigger when init runs again.
    func testRerouteDropsTheOldTransferTrigger() async throws {
        let (configuration, shore) = try await installedNode(role: .shore, nodeID: "shore", tables: tables(), schema: Self.endorsement)
        let before: Int64 = try await shore.scalar("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'seafarer'::regclass AND tgname = 'zz_fleetsync_saga'")
        XCTAssertEqual(before, 1)
        var rerouted = configuration
        let index = rerouted.tables.firstIndex { $0.name == "seafarer" }!
        rerouted.tables[index].route = .broadcast
        _ = try await Installer(configuration: rerouted).install(on: shore)
        let after: Int64 = try await shore.scalar("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'seafarer'::regclass AND tgname = 'zz_fleetsync_saga'")
        XCTAssertEqual(after, 0)
    }

    /// The queue stops at its byte budget in the database: rows behind it are not fetched, and
    /// the first row goes whatever its size.
    func testQueueFetchesNoRowsPastItsByteBudget() async throws {
        let (configuration, shore) = try await installedNode(role: .shore, nodeID: "shore", tables: tables(), schema: Self.endorsement)
        try Fixtures.runScript("""
            INSERT INTO certificate_type (code, title) SELECT 'T' || i, repeat('x', 10000) FROM generate_series(1, 20) i;
            """, url: configuration.databaseURL)
        _ = try await OutboxReader(session: shore).sequence()
        let queue = VesselQueue(configuration: configuration, session: shore)
        let three = try await queue.page(vessel: "aurora", after: 0, limit: 1_000, byteBudget: 35_000)
        XCTAssertEqual(three.events.count, 3)
        XCTAssertTrue(three.more)
        XCTAssertEqual(three.fetched, 4, "one row past the batch, not the other seventeen")
        let one = try await queue.page(vessel: "aurora", after: 0, limit: 1_000, byteBudget: 5_000)
        XCTAssertEqual(one.events.count, 1, "a row larger than the budget still goes, alone")
        XCTAssertTrue(one.more)
        XCTAssertEqual(one.fetched, 2)
        let rest = try await queue.page(vessel: "aurora", after: three.cursor, limit: 1_000, byteBudget: 1_000_000)
        XCTAssertEqual(rest.events.count, 17)
        XCTAssertFalse(rest.more)
    }
}
