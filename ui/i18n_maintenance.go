package ui

// The messages of node maintenance: cordons and moving VMs between nodes,
// as the audit log and a VM's history name them. catalogs merges them in.

func maintenanceEN() map[string]string {
	return map[string]string{
		"action.vm.migrate":    "Move a VM to another box",
		"action.node.cordon":   "Take a box out of use for new VMs",
		"action.node.uncordon": "Put a box back in use for new VMs",
		"vmevent.migrate":      "Moved to another box",
		"vm.migrate.title":     "Move to another box",
		"vm.migrate.hint":      "The VM is stopped and its disks are volumes, so it can start on another box. Nothing is copied. Its serial log stays on this box.",
		"vm.migrate.node":      "Box",
		"vm.migrate.auto":      "Let Cairn choose",
		"vm.migrate.submit":    "Move",
		"vmdone.migrate":       "The VM was moved. Start it to run it on its new box.",
	}
}

func maintenanceZH() map[string]string {
	return map[string]string{
		"action.vm.migrate":    "将虚拟机迁移到另一台主机",
		"action.node.cordon":   "停止向主机放置新虚拟机",
		"action.node.uncordon": "恢复向主机放置新虚拟机",
		"vmevent.migrate":      "已迁移到另一台主机",
		"vm.migrate.title":     "迁移到另一台主机",
		"vm.migrate.hint":      "虚拟机已停止，其磁盘均为云硬盘，因此可以在另一台主机上启动。不复制任何数据。串口日志保留在本主机上。",
		"vm.migrate.node":      "主机",
		"vm.migrate.auto":      "由 Cairn 选择",
		"vm.migrate.submit":    "迁移",
		"vmdone.migrate":       "虚拟机已迁移。启动后将在新主机上运行。",
	}
}
