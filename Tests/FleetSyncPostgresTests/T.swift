import XCTest
@testable import FleetSyncCore
final class T: XCTestCase { func testX() {} }
