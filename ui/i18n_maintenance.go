package ui

// The messages of node maintenance: cordons and moving VMs between nodes,
// as the audit log and a VM's history and page name them. catalogs merges
// them in.

func maintenanceEN() map[string]string {
	return map[string]string{
		"action.vm.migrate":    "Move a VM to another node",
		"action.node.cordon":   "Take a node out of use for new VMs",
		"action.node.uncordon": "Put a node back in use for new VMs",
		"vmevent.migrate":      "Moved to another node",
		"vm.migrate.title":     "Move to another node",
		"vm.migrate.hint":      "The VM is stopped and its disks are volumes, so it can start on another node. Nothing is copied. Its serial log starts anew there.",
		"vm.migrate.node":      "Node",
		"vm.migrate.auto":      "Let Cairn choose",
		"vm.migrate.submit":    "Move",
		"vmdone.migrate":       "The VM was moved. Start it to run it on its new node.",
	}
}

func maintenanceZH() map[string]string {
	return map[string]string{
		"action.vm.migrate":    "将虚拟机迁移到另一个节点",
		"action.node.cordon":   "停止向节点放置新虚拟机",
		"action.node.uncordon": "恢复向节点放置新虚拟机",
		"vmevent.migrate":      "已迁移到另一个节点",
		"vm.migrate.title":     "迁移到另一个节点",
		"vm.migrate.hint":      "虚拟机已停止，其磁盘均为云硬盘，因此可以在另一个节点上启动。不复制任何数据。串口日志将在新节点上重新开始。",
		"vm.migrate.node":      "节点",
		"vm.migrate.auto":      "由 Cairn 选择",
		"vm.migrate.submit":    "迁移",
		"vmdone.migrate":       "虚拟机已迁移。启动后将在新节点上运行。",
	}
}
