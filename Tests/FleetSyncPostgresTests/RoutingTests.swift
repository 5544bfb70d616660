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
    }
}
